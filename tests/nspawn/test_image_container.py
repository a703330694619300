"""The image, provisioned for real in a booted systemd-nspawn container and tested like a VM.

This is the default run's end-to-end test: the rendered provisioning scripts and the seal run
unchanged in a container of the target OS (built from the distribution archive, like the base
disk), then the sealed root boots as a launched instance (NoCloud seed with only an SSH key)
and the testinfra suite in tests/image/ runs against it over SSH, from outside its network
namespace. First-boot scenarios of issue 4 run on copies of the same sealed root.

PostgreSQL on jammy: PGDG (the catalogue default for 15) is unreachable here, so this test's
catalogue overrides the jammy image to the distribution's PostgreSQL 14, and says so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_image.container import Container, copy_rootfs
from odoo_image.imagetest import run_suite
from odoo_image.nspawn_image import ProvisionedRoot, default_user, launched, provision
from odoo_image.progress import Progress
from odoo_image.spec import load_catalogue
from odoo_image.userdata import cloud_config
from odoo_image.vm import generate_ssh_keypair
from tests.fixtures.catalogue import POSTGRESQL, write_fixture_catalogue

pytestmark = [pytest.mark.nspawn,
              pytest.mark.skipif(os.geteuid() != 0, reason="systemd-nspawn and network namespaces need root")]

OS_NAME = os.environ.get("ODOO_IMAGE_TEST_OS", "jammy")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"nspawn-{OS_NAME}")


@pytest.fixture(scope="module")
def image(workdir: Path) -> Iterator[ProvisionedRoot]:
    catalogue_path = write_fixture_catalogue(workdir, (OS_NAME,))
    spec = load_catalogue(catalogue_path).images[0]
    progress = Progress(f"nspawn image {OS_NAME}")
    try:
        yield provision(spec, workdir, workdir / "image", progress)
    finally:
        progress.print_summary()


@pytest.fixture(scope="module")
def key(workdir: Path):
    return generate_ssh_keypair(workdir / "keys")


def instance_root(image: ProvisionedRoot, workdir: Path, name: str) -> Path:
    """A fresh instance disk: a private copy of the sealed image root."""
    return copy_rootfs(image.root, workdir / f"instance-{name}")


def launch(image: ProvisionedRoot, workdir: Path, name: str, user_data: str):
    root = instance_root(image, workdir, name)
    return launched(root, workdir / f"{name}.log", user_data, instance_id=f"i-{name}")


def suite(box: Container, image: ProvisionedRoot, workdir: Path, key, name: str) -> int:
    manifest = workdir / "manifest.json"
    manifest.write_text(json.dumps(image.info))
    env = {"ODOO_IMAGE_MANIFEST": str(manifest), "ODOO_IMAGE_EXTERNAL_ADDR": box.network.guest_addr,
           "ODOO_IMAGE_EXPECT_PG": str(POSTGRESQL[OS_NAME]["version"]),
           "ODOO_IMAGE_BUILD_MACHINE_ID": image.build_machine_id}
    return run_suite(host=box.network.guest_addr, port=22, user=default_user(box.root), key=key.private,
                     env=env, junit=workdir / f"{name}-junit.xml")


def read_json(box: Container, path: str) -> dict:
    return json.loads(box.exec(["cat", path], capture=True).stdout)


def test_sealed_image_has_no_per_host_state(image: ProvisionedRoot) -> None:
    root = image.root
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert not (root / "var/tmp/odoo-image").exists()
    assert not (root / "var/lib/odoo-image/secrets.json").exists()
    baked = (root / "etc/odoo/conf.d/00-image.conf").read_text()
    assert not re.search(r"^\s*(admin_passwd|db_password)\s*=", baked, re.M)
    assert not list((root / "etc/odoo/conf.d").glob("10-*"))
    assert "packer" not in (root / "etc/passwd").read_text()
    release = json.loads((root / "etc/odoo-image-release").read_text())
    assert release["odoo_source_pin"].startswith("archive:sha256:")


def test_default_launch_passes_the_image_suite_and_survives_reboot(image, workdir, key) -> None:
    """Issue 4 (a) no settings → HTTPS self-signed, Odoo healthy; (d) reboot keeps secrets."""
    with launch(image, workdir, "default", cloud_config({}, [key.public])) as box:
        status = read_json(box, "/var/lib/odoo-image/firstboot.json")
        assert status["state"] == "done", status
        secrets_before = read_json(box, "/var/lib/odoo-image/secrets.json")
        tuning_before = box.exec(["cat", "/etc/odoo/conf.d/20-tuning.conf"], capture=True).stdout
        assert suite(box, image, workdir, key, "default") == 0
        box.exec(["sh", "-c", "echo '# stale' > /etc/odoo/conf.d/20-tuning.conf"])
        box.poweroff()
        box.boot()
        box.exec(["cloud-init", "status", "--wait"], check=False, timeout=600)
        box.exec(["systemctl", "is-active", "--wait", "odoo-tune.service"], check=False, timeout=120)
        assert read_json(box, "/var/lib/odoo-image/secrets.json") == secrets_before
        assert box.exec(["cat", "/etc/odoo/conf.d/20-tuning.conf"], capture=True).stdout == tuning_before
        assert box.exec(["systemctl", "is-active", "odoo"], check=False, capture=True).stdout.strip() == "active"


def test_two_instances_of_one_image_share_no_secret(image, workdir, key) -> None:
    """Issue 4 acceptance 3: machine-id, host keys, master hash, DB password, database.secret."""
    seen = []
    for name in ("twin-a", "twin-b"):
        with launch(image, workdir, name, cloud_config({}, [key.public])) as box:
            secrets = read_json(box, "/var/lib/odoo-image/secrets.json")
            seen.append({
                "machine-id": box.exec(["cat", "/etc/machine-id"], capture=True).stdout.strip(),
                "host-key": box.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], capture=True).stdout.split()[1],
                **{k: v for k, v in secrets.items() if isinstance(v, str)},
            })
    a, b = seen
    assert set(a) == set(b) and len(a) >= 5
    for field in a:
        assert a[field] and b[field] and a[field] != b[field], field


def test_domain_without_reachable_letsencrypt_falls_back_to_self_signed(image, workdir, key) -> None:
    """Issue 4 (b): Let's Encrypt unreachable → self-signed, retry timer, HSTS off, service up."""
    settings = {"domain": "erp.example.com", "letsencrypt_email": "ops@example.com"}
    with launch(image, workdir, "domain", cloud_config(settings, [key.public])) as box:
        status = read_json(box, "/var/lib/odoo-image/firstboot.json")
        assert status["state"] == "done", status
        served = box.exec(["sh", "-c", "echo | openssl s_client -connect 127.0.0.1:443 -servername erp.example.com "
                                       "2>/dev/null | openssl x509 -noout -subject -issuer"], capture=True).stdout
        subject, issuer = served.strip().splitlines()
        assert "erp.example.com" in subject and subject.split("=", 1)[1] == issuer.split("=", 1)[1]
        assert box.exec(["systemctl", "is-active", "odoo-certbot-retry.timer"], capture=True,
                        check=False).stdout.strip() == "active"
        headers = box.exec(["curl", "-skI", "--resolve", "erp.example.com:443:127.0.0.1",
                            "https://erp.example.com/web/health"], capture=True).stdout
        assert " 200" in headers.splitlines()[0] and "strict-transport-security" not in headers.lower()
        assert "server_name erp.example.com" in box.exec(["cat", "/etc/odoo-image/nginx/server_name.conf"],
                                                         capture=True).stdout
        conf = box.exec(["cat", "/etc/odoo/odoo.conf"], capture=True).stdout
        assert "dbfilter = ^erp$" in conf or "dbfilter = erp" in conf or "dbfilter = ^%d$" in conf, conf


def test_database_with_modules_is_created_and_admin_can_log_in(image, workdir, key) -> None:
    """Issue 4 (c): database + modules → created, modules installed, admin password works."""
    settings = {"database": "acme", "modules": ["sale", "crm"], "admin_login": "boss@example.com",
                "admin_password": "generate"}
    with launch(image, workdir, "database", cloud_config(settings, [key.public])) as box:
        status = read_json(box, "/var/lib/odoo-image/firstboot.json")
        assert status["state"] == "done", status
        assert status["problems"] == [] and status["errors"] == [], status
        installed = box.exec(["runuser", "-u", "postgres", "--", "psql", "-d", "acme", "-qtAX", "-c",
                              "SELECT name FROM ir_module_module WHERE state = 'installed' ORDER BY name"],
                             capture=True).stdout.split()
        assert {"base", "sale", "crm"} <= set(installed)
        credentials = box.exec(["cat", "/var/lib/odoo-image/credentials"], capture=True).stdout
        values = dict(line.split("=", 1) for line in credentials.splitlines()
                      if "=" in line and not line.lstrip().startswith("#"))
        password = {k.strip(): v.strip() for k, v in values.items()}["admin_password"]
        uid = box.exec(["python3", "-c",
                        "import ssl, sys, xmlrpc.client as x; "
                        "c = x.ServerProxy('https://127.0.0.1/xmlrpc/2/common', context=ssl._create_unverified_context()); "
                        "print(c.authenticate('acme', sys.argv[1], sys.argv[2], {}))",
                        "boss@example.com", password], capture=True).stdout.strip()
        assert uid.isdigit() and int(uid) > 0
        wrong = box.exec(["python3", "-c",
                          "import ssl, xmlrpc.client as x; "
                          "c = x.ServerProxy('https://127.0.0.1/xmlrpc/2/common', context=ssl._create_unverified_context()); "
                          "print(c.authenticate('acme', 'boss@example.com', 'wrong', {}))"], capture=True).stdout.strip()
        assert wrong == "False"
