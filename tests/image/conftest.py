"""Booted-image suite: options come from testinfra's --hosts and from environment variables.

    pytest tests/image --hosts=ssh://USER@HOST:PORT --ssh-identity-file=KEY [--ssh-config=FILE]

Environment (all optional; set by the harness that booted the instance):
- ODOO_IMAGE_MANIFEST         path (on the runner) of the build manifest JSON; the keys it
                              shares with /etc/odoo-image-release must match.
- ODOO_IMAGE_EXTERNAL_ADDR    an address of the instance the runner reaches without port
                              forwarding: probe 22/80/443 open, 8069/8072/5432 closed, and
                              check the client address Odoo logs for a proxied login.
- ODOO_IMAGE_EXPECT_PG        expected PostgreSQL major (default 15).
- ODOO_IMAGE_BUILD_MACHINE_ID machine-id of the build; the instance's must differ.
- ODOO_IMAGE_READY_TIMEOUT    seconds to wait for Odoo to answer through NGINX (default 300).
- ODOO_IMAGE_TEST_CREATE_DB   1 (default): when no Odoo database passes dbfilter, create a
                              throwaway one for the checks that need one (websocket, login
                              log) and drop it at the end; 0: skip those checks instead.

Without --hosts this directory is skipped as a whole: it is driven by the harnesses in
tests/ (QEMU boot test, nspawn container test), which pass --hosts and assert its result.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from . import helpers as h

HERE = Path(__file__).resolve().parent
SKIP_REASON = (
    "tests/image runs against a booted image instance only: pass --hosts=ssh://USER@HOST:PORT "
    "(and --ssh-identity-file=KEY); the QEMU and nspawn harnesses in tests/ do this"
)


def _hosts_given(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("hosts"))
    except ValueError:  # testinfra not installed: nothing here can run
        return False


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _ours(item):
            item.add_marker(pytest.mark.image)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Skipped here (before any fixture touches a host) rather than left uncollected, so a
    # plain `pytest tests/image` exits 0 with one summary line instead of "no tests ran".
    if _ours(item) and not _hosts_given(item.config):
        pytest.skip(SKIP_REASON)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not _hosts_given(config):
        return None
    names = ["ODOO_IMAGE_MANIFEST", "ODOO_IMAGE_EXTERNAL_ADDR", "ODOO_IMAGE_EXPECT_PG",
             "ODOO_IMAGE_BUILD_MACHINE_ID", "ODOO_IMAGE_READY_TIMEOUT", "ODOO_IMAGE_TEST_CREATE_DB"]
    return ["image suite: " + ", ".join(f"{n}={os.environ.get(n, '(unset)')}" for n in names)]


# --------------------------------------------------------------------------- environment


@pytest.fixture(scope="session")
def expected_pg_major() -> int:
    raw = os.environ.get("ODOO_IMAGE_EXPECT_PG", "").strip() or "15"
    assert raw.isdigit(), f"ODOO_IMAGE_EXPECT_PG must be a PostgreSQL major number, got {raw!r}"
    return int(raw)


@pytest.fixture(scope="session")
def image_manifest() -> dict[str, Any] | None:
    path = os.environ.get("ODOO_IMAGE_MANIFEST", "").strip()
    if not path:
        return None
    manifest = Path(path)
    assert manifest.is_file(), f"ODOO_IMAGE_MANIFEST={path} does not exist on the test runner"
    data = json.loads(manifest.read_text())
    assert isinstance(data, dict), f"{path} does not hold a JSON object"
    return data


@pytest.fixture(scope="session")
def external_addr() -> str | None:
    return os.environ.get("ODOO_IMAGE_EXTERNAL_ADDR", "").strip().strip("[]") or None


@pytest.fixture(scope="session")
def build_machine_id() -> str | None:
    return os.environ.get("ODOO_IMAGE_BUILD_MACHINE_ID", "").strip() or None


@pytest.fixture(scope="session")
def ready_timeout() -> float:
    return float(os.environ.get("ODOO_IMAGE_READY_TIMEOUT", "").strip() or 300)


# --------------------------------------------------------------------------- instance facts


@pytest.fixture(scope="module")
def release(host) -> dict[str, Any]:
    """/etc/odoo-image-release, parsed (the test of its shape is test_release_*)."""
    release_file = host.file(h.RELEASE)
    assert release_file.is_file, f"{h.RELEASE} missing"
    data = json.loads(release_file.content_string)
    assert isinstance(data, dict), f"{h.RELEASE} is not a JSON object"
    return data


@pytest.fixture(scope="module")
def os_release(host) -> dict[str, str]:
    data = {}
    for line in host.file("/etc/os-release").content_string.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            data[key.strip()] = value.strip().strip('"')
    return data


@pytest.fixture(scope="module")
def odoo_options(host) -> dict[str, str]:
    """[options] of the assembled /etc/odoo/odoo.conf (read as root)."""
    sections = h.parse_ini(h.read_root_file(host, h.ODOO_CONF))
    assert "options" in sections, f"{h.ODOO_CONF} has no [options] section"
    return sections["options"]


@pytest.fixture(scope="module")
def nginx_dump(host) -> str:
    """`nginx -T`: the whole configuration NGINX runs with."""
    result = h.root_run(host, "nginx -T 2>&1")
    assert result.rc == 0, f"nginx -T failed: {h.describe(result)}"
    return result.stdout


@pytest.fixture(scope="module")
def settings(host) -> dict[str, Any]:
    """Operator settings (/etc/odoo-image/settings.yaml from user-data), {} when none."""
    if not h.root_file_exists(host, h.SETTINGS):
        return {}
    import yaml

    try:
        data = yaml.safe_load(h.read_root_file(host, h.SETTINGS))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


@pytest.fixture(scope="module")
def domain(settings) -> str | None:
    value = settings.get("domain")
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().rstrip(".").lower()


_READY: dict[str, h.Response] = {}


@pytest.fixture(scope="module")
def odoo_ready(host, ready_timeout) -> h.Response:
    """Wait until Odoo answers /web/health through NGINX (first boot may still be starting it).

    Waited for once per host: later modules reuse the outcome, so a dead instance costs
    one timeout, not one per module.
    """
    key = host.backend.get_pytest_id()
    if key not in _READY:
        _READY[key] = h.wait_for(lambda: h.http(host, "https://127.0.0.1/web/health", timeout=20),
                                 lambda r: r.status == 200, ready_timeout, 5)
    response = _READY[key]
    if response.status != 200:
        pytest.fail(f"Odoo did not answer /web/health through NGINX within {ready_timeout:.0f} s: {response!r}")
    return response


# --------------------------------------------------------------------------- a database


_DATABASES: dict[str, tuple[str, bool]] = {}


def _dbfilter_accepts(dbfilter: str, name: str, http_host: str) -> bool:
    """Odoo's db_filter: %h → the Host (no port), %d → its first label (unless 'www')."""
    if not dbfilter.strip():
        return True
    hostname = http_host.partition(":")[0]
    first = hostname.split(".", 1)[0]
    if first == "www":
        first = hostname.split(".")[1] if "." in hostname else first
    pattern = dbfilter.replace("%h", re.escape(hostname)).replace("%d", re.escape(first))
    return re.match(pattern, name) is not None


def _name_for_filter(dbfilter: str) -> str | None:
    """A database name a `^literal$` dbfilter accepts (first boot writes ^<db>$ or ^<domain>$)."""
    if not dbfilter.strip():
        return "imagetest"
    match = re.fullmatch(r"\^(.+)\$", dbfilter.strip())
    if not match:
        return None
    name = re.sub(r"\\(.)", r"\1", match.group(1))
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name) else None


@pytest.fixture(scope="module")
def odoo_database(host, request, odoo_options, odoo_ready) -> str:
    """An Odoo database that dbfilter lets through for Host 127.0.0.1.

    Odoo serves `/websocket` and logins only with a database (its bus/auth routes need a
    registry). Uses an existing one; otherwise creates a throwaway database (dropped when
    the session ends) unless ODOO_IMAGE_TEST_CREATE_DB=0.
    """
    key = host.backend.get_pytest_id()
    if key in _DATABASES:
        return _DATABASES[key][0]
    dbfilter = odoo_options.get("dbfilter", "")
    usable = [d for d in h.odoo_databases(host) if _dbfilter_accepts(dbfilter, d, "127.0.0.1")]
    if usable:
        _DATABASES[key] = (usable[0], False)
        return usable[0]
    if os.environ.get("ODOO_IMAGE_TEST_CREATE_DB", "1").strip() == "0":
        pytest.skip("no Odoo database on this instance (Odoo serves /websocket and logins only with one) "
                    "and ODOO_IMAGE_TEST_CREATE_DB=0")
    name = _name_for_filter(dbfilter)
    if name is None:
        pytest.skip(f"no Odoo database on this instance and dbfilter {dbfilter!r} names none the suite can create")
    started = time.monotonic()
    result = h.as_user(
        host, "odoo", "%s %s -c %s -d %s -i base --without-demo=all --stop-after-init "
        "--no-http --workers=0 --max-cron-threads=0 --limit-memory-hard=0",
        h.ODOO_PYTHON, h.ODOO_BIN, h.ODOO_CONF, name)
    assert result.rc == 0, f"creating the throwaway database {name} failed: {h.describe(result)}"
    _DATABASES[key] = (name, True)

    def drop() -> None:
        h.root_run(host, "cd / && runuser -u postgres -- psql -X -q -c %s",
                   f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        h.root_run(host, "rm -rf -- %s", f"{h.ODOO_DATA_DIR}/filestore/{name}")

    request.config.add_cleanup(drop)
    print(f"created throwaway database {name} in {time.monotonic() - started:.0f} s")
    return name


@pytest.fixture
def unique_token() -> str:
    return "imagetest-" + uuid.uuid4().hex[:12]
