"""First boot finished, per-instance secrets in place and private, certificates managed."""

from __future__ import annotations

import json

import pytest

from . import helpers as h

pytestmark = pytest.mark.image


@pytest.fixture(scope="module")
def firstboot_status(host) -> dict:
    data = json.loads(h.read_root_file(host, h.FIRSTBOOT_STATUS))
    assert isinstance(data, dict), f"{h.FIRSTBOOT_STATUS} is not a JSON object"
    return data


def test_firstboot_state_is_done(firstboot_status):
    assert firstboot_status.get("state") == "done", (
        f"first boot state {firstboot_status.get('state')!r}, errors {firstboot_status.get('errors')}")


def test_firstboot_recorded_its_steps(firstboot_status):
    steps = firstboot_status.get("steps")
    assert steps, f"{h.FIRSTBOOT_STATUS} records no steps"
    failed = [s for s in steps if isinstance(s, dict) and s.get("state") == "failed"]
    assert not failed, f"failed first-boot steps: {failed}"


def test_firstboot_has_no_errors(firstboot_status):
    assert not firstboot_status.get("errors"), f"first boot errors: {firstboot_status.get('errors')}"


def test_firstboot_done_marker_exists(host):
    assert h.root_file_exists(host, h.FIRSTBOOT_DONE), f"{h.FIRSTBOOT_DONE} missing: odoo.service would not start"


@pytest.mark.parametrize("path", [h.CREDENTIALS, h.SECRETS])
def test_secret_file_is_0600_root(host, path):
    stat = h.root_stat(host, path)
    assert stat is not None and stat.is_file, f"{path} missing"
    assert (stat.user, stat.group, stat.mode) == ("root", "root", 0o600), f"{path} is {stat!r}"


@pytest.mark.parametrize("path", [h.CREDENTIALS, h.SECRETS])
def test_secret_file_not_readable_by_odoo(host, path):
    assert host.user("odoo").exists, "user odoo does not exist"
    assert h.root_file_exists(host, path), f"{path} missing"
    result = h.as_user(host, "odoo", "test -r %s", path)
    assert result.rc == 1, f"user odoo can read {path} ({h.describe(result)})"


def test_credentials_hold_the_master_password(host):
    creds = h.parse_key_values(h.read_root_file(host, h.CREDENTIALS))
    assert creds.get("master_password"), f"{h.CREDENTIALS} has no master_password"


def test_master_password_hash_matches_credentials(host, odoo_options):
    clear = h.parse_key_values(h.read_root_file(host, h.CREDENTIALS)).get("master_password", "")
    assert clear, f"{h.CREDENTIALS} has no master_password"
    assert clear != "admin"
    assert h.pbkdf2_sha512_verify(clear, odoo_options.get("admin_passwd", "")), (
        f"admin_passwd in {h.ODOO_CONF} is not the hash of the master password in {h.CREDENTIALS}")


def test_certbot_is_installed(host):
    result = host.run("certbot --version 2>&1")
    assert result.rc == 0, h.describe(result)


def test_certbot_renewal_timer_is_enabled(host):
    assert h.systemctl(host, "is-enabled", "certbot.timer") == "enabled"


def test_no_certificate_requested_without_a_domain(host, domain):
    if domain:
        pytest.skip(f"domain {domain} configured")
    out = h.root_run(host, "ls -A /etc/letsencrypt/live 2>/dev/null").stdout.split()
    assert not [entry for entry in out if entry != "README"], f"certificates without a domain: {out}"


def test_letsencrypt_retry_timer_while_self_signed_with_a_domain(host, settings, domain, nginx_dump):
    if not (domain and settings.get("letsencrypt_email")):
        pytest.skip("no domain + letsencrypt_email in settings")
    cert = h.nginx_directives(nginx_dump, "ssl_certificate")[0]
    target = h.root_check(host, "readlink -f %s", cert).strip()
    if "/etc/letsencrypt/" in target:
        pytest.skip(f"a Let's Encrypt certificate is in place ({target})")
    assert h.systemctl(host, "is-active", "odoo-certbot-retry.timer") == "active", (
        "self-signed fallback with a domain, but the Let's Encrypt retry timer is not scheduled")
