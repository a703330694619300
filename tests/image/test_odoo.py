"""Odoo: the venv, odoo-bin, the assembled configuration, data directory, tuning, logs."""

from __future__ import annotations

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

IMPORTS = "import psycopg2, lxml, PIL, werkzeug, gevent, passlib, reportlab, ldap"


def test_venv_imports_odoo_dependencies(host):
    result = h.as_user(host, "odoo", "%s -c %s", h.ODOO_PYTHON, IMPORTS)
    assert result.rc == 0, f"the venv cannot import Odoo's key packages as odoo: {h.describe(result)}"


def test_odoo_bin_help_runs_as_odoo(host):
    result = h.as_user(host, "odoo", "%s %s --help", h.ODOO_PYTHON, h.ODOO_BIN)
    assert result.rc == 0, h.describe(result)
    assert "usage" in result.stdout.lower(), result.stdout[:500]


def test_odoo_source_is_not_writable_by_odoo(host):
    assert host.user("odoo").exists, "user odoo does not exist"
    assert h.root_file_exists(host, h.ODOO_BIN), f"{h.ODOO_BIN} missing"
    for path in (h.ODOO_BIN, h.ODOO_BIN.rsplit("/", 1)[0]):
        result = h.as_user(host, "odoo", "test -w %s", path)
        assert result.rc == 1, f"{path} is writable by odoo ({h.describe(result)})"


def test_odoo_conf_is_0640_root_odoo(host):
    # docs/image-layout.md: 0640 root:odoo (odoo reads it, cannot rewrite it).
    conf = h.root_stat(host, h.ODOO_CONF)
    assert conf is not None and conf.is_file, f"{h.ODOO_CONF} missing"
    assert (conf.user, conf.group) == ("root", "odoo"), f"{h.ODOO_CONF} is {conf.user}:{conf.group}"
    assert conf.mode == 0o640, f"{h.ODOO_CONF} mode is {oct(conf.mode)}"


def test_master_password_is_a_pbkdf2_hash(odoo_options):
    value = odoo_options.get("admin_passwd", "")
    assert value, "admin_passwd is empty or missing: Odoo would fall back to the default 'admin'"
    assert value != "admin", "admin_passwd is Odoo's default 'admin'"
    assert value.startswith(h.PBKDF2_PREFIX), f"admin_passwd is not a {h.PBKDF2_PREFIX}... hash"
    assert len(value.split("$")) == 5, "admin_passwd is not a complete passlib pbkdf2_sha512 hash"


def test_db_password_is_set(odoo_options):
    value = odoo_options.get("db_password", "")
    assert value and value.lower() not in ("false", "odoo"), "db_password is not set"
    assert len(value) >= 16, "db_password is too short to be a generated secret"


@pytest.mark.parametrize("key,expected", [
    ("list_db", False),
    ("proxy_mode", True),
    ("x_sendfile", True),
])
def test_odoo_boolean_option(odoo_options, key, expected):
    assert h.ini_bool(odoo_options.get(key)) is expected, f"{key} = {odoo_options.get(key)!r}, expected {expected}"


def test_odoo_http_interface_is_loopback(odoo_options):
    assert odoo_options.get("http_interface") == "127.0.0.1"


def test_odoo_without_demo_is_all(odoo_options):
    assert odoo_options.get("without_demo") == "all"


def test_odoo_db_user_is_not_postgres(odoo_options):
    assert odoo_options.get("db_user") == "odoo"


def test_odoo_data_dir_is_private_to_odoo(host, odoo_options):
    data_dir = odoo_options.get("data_dir")
    assert data_dir, "data_dir is not set"
    directory = h.root_stat(host, data_dir, follow=True)
    assert directory is not None and directory.is_directory, f"data_dir {data_dir} does not exist"
    assert directory.user == "odoo", f"{data_dir} is owned by {directory.user}"
    assert directory.mode & 0o007 == 0, f"{data_dir} is open to others ({oct(directory.mode)})"


def test_odoo_logfile_is_the_one_fail2ban_watches(odoo_options):
    assert odoo_options.get("logfile") == h.ODOO_LOG


def test_odoo_tuning_dropin_exists_with_prefork_workers(host):
    text = h.read_root_file(host, h.ODOO_TUNING_CONF)
    tuning = h.parse_ini(text).get("options", {})
    workers = tuning.get("workers", "")
    assert workers.isdigit() and int(workers) >= 1, (
        f"{h.ODOO_TUNING_CONF} workers = {workers!r}: the NGINX /websocket route needs prefork (>= 1)")
    for key in ("limit_memory_soft", "limit_memory_hard", "db_maxconn"):
        assert tuning.get(key), f"{h.ODOO_TUNING_CONF} does not set {key}"


def test_odoo_conf_carries_the_tuning(host, odoo_options):
    tuning = h.parse_ini(h.read_root_file(host, h.ODOO_TUNING_CONF)).get("options", {})
    local: dict[str, str] = {}
    if h.root_file_exists(host, h.ODOO_LOCAL_CONF):
        local = h.parse_ini(h.read_root_file(host, h.ODOO_LOCAL_CONF)).get("options", {})
    differ = {k: (v, odoo_options.get(k)) for k, v in tuning.items()
              if k not in local and odoo_options.get(k) != v}
    assert not differ, f"{h.ODOO_CONF} does not carry {h.ODOO_TUNING_CONF} (tuning, assembled): {differ}"


def test_logrotate_config_for_odoo_is_valid(host):
    result = h.root_run(host, "logrotate -d /etc/logrotate.d/odoo 2>&1")
    assert result.rc == 0, h.describe(result)
    errors = [line for line in result.stdout.splitlines() if line.lower().startswith("error")]
    assert not errors, f"logrotate -d reports: {errors}"
    assert h.ODOO_LOG.rsplit("/", 1)[0] in result.stdout, "logrotate's odoo config does not cover /var/log/odoo"


def test_odoo_log_is_written(host, odoo_ready):
    log = h.root_stat(host, h.ODOO_LOG, follow=True)
    assert log is not None and log.is_file, f"{h.ODOO_LOG} missing"
    assert log.size > 0, f"{h.ODOO_LOG} is empty although Odoo is serving"
