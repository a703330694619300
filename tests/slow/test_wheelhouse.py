"""The real jammy wheelhouse for Odoo 18's requirements, built natively in an nspawn container.

Slow (a cold build with an empty pip cache is minutes: gevent alone compiles for ~1.5 min on
2 cores) and needs root, systemd-nspawn, mmdebstrap, the Ubuntu archive and PyPI. Run with
``python3 -m pytest --run-slow tests/slow/test_wheelhouse.py -s`` to see the timings.
Outbound TLS here goes through an intercepting proxy: the host bundle is handed in as the
build's CA bundle, the way CI and operators do it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from odoo_image.paths import REPO_ROOT
from odoo_image.progress import Progress
from odoo_image.wheelhouse import ensure_wheelhouse

pytestmark = pytest.mark.slow

REQUIREMENTS = REPO_ROOT.parent / "shared" / "odoo-18.0" / "requirements.txt"
FIXTURE_REQUIREMENTS = REPO_ROOT / "tests" / "fixtures" / "odoo_fixture" / "requirements.txt"
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def jammy():
    if os.geteuid() != 0 or not shutil.which("systemd-nspawn") or not shutil.which("mmdebstrap"):
        pytest.skip("needs root, systemd-nspawn and mmdebstrap")
    requirements = REQUIREMENTS if REQUIREMENTS.is_file() else FIXTURE_REQUIREMENTS
    progress = Progress("wheelhouse jammy")
    start = time.monotonic()
    wheelhouse = ensure_wheelhouse("jammy", requirements, constraints=["Cython<3.1", "setuptools<82"], extra=[],
                                   progress=progress, ca_bundle=HOST_BUNDLE if HOST_BUNDLE.is_file() else None)
    took = time.monotonic() - start
    progress.print_summary()
    size = sum(p.stat().st_size for p in wheelhouse.dir.glob("*.whl"))
    print(f"\nwheelhouse {wheelhouse.key[:12]}: this call {took:.1f} s; when built: "
          f"{json.dumps(wheelhouse.meta['seconds'])} s; {len(list(wheelhouse.dir.glob('*.whl')))} wheels, "
          f"{size / 2**20:.1f} MiB; runtime packages: {' '.join(wheelhouse.runtime_packages)}", file=sys.stderr)
    return wheelhouse


def test_compiled_wheels_for_cp310(jammy) -> None:
    names = [p.name for p in jammy.dir.glob("*.whl")]
    for dist in ("gevent-21.8.0-cp310", "psycopg2-2.9.2-cp310", "python_ldap-3.4.0-cp310", "cbor2-5.4.2-cp310",
                 "rjsmin-1.1.0-cp310"):
        assert any(n.startswith(dist) for n in names), f"no {dist} wheel in {names}"
    for tool in ("pip-", "setuptools-80.9.0-", "wheel-"):
        assert any(n.startswith(tool) for n in names), f"the guest needs a {tool} wheel to install offline"


def test_lock_is_complete_and_matches_the_wheels(jammy) -> None:
    lines = [line for line in jammy.lock_file.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) >= 43
    pins = dict(line.split("==", 1) for line in lines)
    assert pins["gevent"] == "21.8.0" and pins["psycopg2"] == "2.9.2" and pins["setuptools"] == "80.9.0"
    assert "zope.interface" in pins and "zope.event" in pins  # transitive, unpinned upstream: locked here
    assert len(list(jammy.dir.glob("*.whl"))) == len(lines)


def test_runtime_packages_and_no_build_leftovers(jammy) -> None:
    assert {"libpq5", "libldap-2.5-0", "libsasl2-2"} <= set(jammy.runtime_packages)
    root = jammy.dir.parent
    assert sorted(p.name for p in root.iterdir()) == ["requirements.lock", "wheelhouse.json", "wheels"]
    assert not any(p.suffix in (".crt", ".pem") for p in root.rglob("*")), "the build CA must not be in the output"


def test_cache_hit_is_fast(jammy) -> None:
    start = time.monotonic()
    again = ensure_wheelhouse("jammy", REQUIREMENTS if REQUIREMENTS.is_file() else FIXTURE_REQUIREMENTS,
                              constraints=["setuptools<82", "Cython<3.1"], extra=[], progress=Progress(),
                              ca_bundle=None)
    assert again.key == jammy.key  # constraint order and the CA bundle do not change the key
    assert time.monotonic() - start < 30


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fixture_runs_from_the_wheelhouse_in_jammy(jammy, tmp_path) -> None:
    """Install like the guest (offline, from the lock) and run the Odoo-shaped fixture on
    jammy's python3.10 + Werkzeug 2.0.2: prefork HTTP workers and the gevent process."""
    import importlib.util
    import subprocess
    import threading
    import urllib.error
    import urllib.request

    from odoo_image.rootfs import ensure_rootfs, nspawn_run
    from odoo_image.wheelhouse import BUILD_PACKAGES

    spec = importlib.util.spec_from_file_location("make_fixture", REPO_ROOT / "tests" / "fixtures" / "make_fixture.py")
    assert spec and spec.loader
    make_fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixture)
    archive, _ = make_fixture.build_fixture_archive(tmp_path)
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(src), "--strip-components=1"], check=True)
    rootfs = ensure_rootfs("jammy", BUILD_PACKAGES, mirror=None, keyring_fingerprint=None, progress=Progress())
    binds = {work: "/w"}
    ro = {jammy.dir: "/wheels", jammy.lock_file: "/requirements.lock", src: "/src"}
    pip = ["/w/venv/bin/pip", "install", "--no-index", "--find-links", "/wheels", "--disable-pip-version-check"]
    nspawn_run(rootfs, ["python3", "-m", "venv", "/w/venv"], binds=binds, ro_binds=ro)
    nspawn_run(rootfs, [*pip, "--upgrade", "pip", "wheel", "setuptools==80.9.0"], binds=binds, ro_binds=ro)
    nspawn_run(rootfs, [*pip, "-r", "/requirements.lock"], binds=binds, ro_binds=ro)
    helped = nspawn_run(rootfs, ["/w/venv/bin/python3", "/src/odoo-bin", "--help"], binds=binds, ro_binds=ro,
                        capture=True)
    assert "--stop-after-init" in helped.stdout

    http_port, gevent_port = _free_port(), _free_port()
    (work / "odoo.conf").write_text(
        "[options]\ndb_host = 127.0.0.1\ndb_port = 1\ndb_user = odoo\nhttp_interface = 127.0.0.1\n"
        f"http_port = {http_port}\ngevent_port = {gevent_port}\nworkers = 2\ndata_dir = /w/data\n"
        "logfile = /w/odoo.log\nlist_db = False\n")
    server = threading.Thread(target=nspawn_run, daemon=True, args=(
        rootfs, ["timeout", "25", "/w/venv/bin/python3", "/src/odoo-bin", "-c", "/w/odoo.conf"]),
        kwargs={"binds": binds, "ro_binds": ro, "check": False})
    server.start()

    def health(port: int) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/web/health", timeout=5) as resp:
                return resp.status
        except (urllib.error.URLError, ConnectionError):
            return 0

    deadline = time.monotonic() + 20
    seen = {}
    while time.monotonic() < deadline and len(seen) < 2:
        for port in (http_port, gevent_port):
            if health(port) == 200:
                seen[port] = True
        time.sleep(0.5)
    server.join(timeout=40)
    log = (work / "odoo.log").read_text()
    assert seen == {http_port: True, gevent_port: True}, log[-3000:]
    assert "Evented Service (longpolling) running on 127.0.0.1:" in log
    assert "DistributionNotFound" not in log
