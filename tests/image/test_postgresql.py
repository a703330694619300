"""PostgreSQL: the expected major, on loopback only, the odoo role, tuning applied."""

from __future__ import annotations

import pytest

from . import helpers as h

pytestmark = pytest.mark.image


def test_postgresql_cluster_of_expected_major_is_running(host, expected_pg_major):
    unit = f"postgresql@{expected_pg_major}-main"
    assert h.wait_active(host, unit) == "active", f"{unit} is not active: {h.systemctl(host, 'status', unit)}"


def test_postgresql_server_version_is_expected_major(host, expected_pg_major):
    version_num = h.psql(host, "SHOW server_version_num")
    assert version_num.isdigit(), version_num
    assert int(version_num) // 10000 == expected_pg_major, f"server_version_num {version_num}"


def test_postgresql_listens_only_on_loopback(host):
    addresses = h.addresses_on_port(host, 5432)
    assert addresses, "nothing listens on 5432"
    assert addresses <= h.LOOPBACK, f"PostgreSQL listens on {sorted(addresses)} (only 127.0.0.1/::1 allowed)"


def test_odoo_role_is_login_createdb_not_superuser_not_createrole(host):
    row = h.psql(host, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = 'odoo'")
    assert row, "PostgreSQL role odoo does not exist"
    rolsuper, rolcreaterole, rolcreatedb, rolcanlogin = row.split("|")
    assert rolsuper == "f", "role odoo is a superuser"
    assert rolcreaterole == "f", "role odoo may create roles"
    assert rolcreatedb == "t", "role odoo may not create databases"
    assert rolcanlogin == "t", "role odoo cannot log in"


def test_odoo_role_has_a_password(host):
    # Set at first boot; without it Odoo's TCP connection to localhost fails (scram-sha-256).
    has_password = h.psql(host, "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'odoo'")
    assert has_password == "t", f"role odoo has no password (query said {has_password!r})"


def _tuning_file(expected_pg_major: int) -> str:
    return f"/etc/postgresql/{expected_pg_major}/main/conf.d/{h.PG_TUNING_NAME}"


def test_postgresql_tuning_dropin_exists(host, expected_pg_major):
    text = h.read_root_file(host, _tuning_file(expected_pg_major))
    assert h.pg_conf_value(text, "shared_buffers"), f"{_tuning_file(expected_pg_major)} sets no shared_buffers"


def test_postgresql_conf_d_is_included(host, expected_pg_major):
    # Debian's postgresql.conf has include_dir = 'conf.d' — the drop-ins only work with it.
    text = h.read_root_file(host, f"/etc/postgresql/{expected_pg_major}/main/postgresql.conf")
    assert h.pg_conf_value(text, "include_dir") == "conf.d"


def test_live_shared_buffers_matches_the_tuning_dropin(host, expected_pg_major):
    path = _tuning_file(expected_pg_major)
    wanted = h.pg_conf_value(h.read_root_file(host, path), "shared_buffers")
    assert wanted, f"{path} sets no shared_buffers"
    live = h.psql(host, "SHOW shared_buffers")
    source = h.psql(host, "SELECT sourcefile FROM pg_settings WHERE name = 'shared_buffers'")
    assert h.pg_size_bytes(live) == h.pg_size_bytes(wanted), (
        f"running shared_buffers {live} but {path} says {wanted} (set by {source or 'default'}; "
        "a later conf.d file or ALTER SYSTEM wins, or PostgreSQL was not restarted after tuning)")
