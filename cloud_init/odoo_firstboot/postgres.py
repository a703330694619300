"""PostgreSQL administration as the `postgres` superuser over the local socket (peer auth).

SQL goes to psql on stdin, so the role password never appears in a process list.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from . import paths
from .fsutil import ensure_dir, write_atomic
from .paths import Layout
from .runner import CommandFailed, Completed, Runner

_MAJOR = re.compile(r"^\d+(\.\d+)?$")


def detect_major(layout: Layout) -> str | None:
    """The installed cluster's major version (/etc/postgresql/<major>/main), newest first."""
    base = layout.at(paths.PG_ETC)
    if not base.is_dir():
        return None
    majors = [p.name for p in base.iterdir() if _MAJOR.match(p.name) and (p / "main").is_dir()]
    if not majors:
        return None
    return max(majors, key=lambda m: tuple(int(x) for x in m.split(".")))


def literal(value: str) -> str:
    """SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def identifier(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class Postgres:
    def __init__(self, runner: Runner, sleep: Callable[[float], None] = time.sleep) -> None:
        self.runner = runner
        self.sleep = sleep

    def psql(self, sql: str, *, database: str = "postgres", check: bool = True) -> Completed:
        return self.runner.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                database,
            ],
            input_text=sql,
            timeout=120,
            check=check,
        )

    def wait_ready(self, timeout: float = 120.0, interval: float = 2.0) -> None:
        """postgresql.service is an umbrella unit on Debian/Ubuntu; the cluster
        (postgresql@<major>-main) may still be starting when it reports active."""
        waited = 0.0
        while True:
            result = self.psql("SELECT 1;", check=False)
            if result.ok:
                return
            if waited >= timeout:
                raise CommandFailed(result, f"PostgreSQL not ready after {timeout:.0f} s")
            self.sleep(interval)
            waited += interval

    def role_exists(self, role: str) -> bool:
        out = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {literal(role)};").stdout
        return out.strip() == "1"

    def set_role_password(self, role: str, password: str) -> bool:
        """Set the role's password, creating the role (as the image contract defines it:
        LOGIN CREATEDB NOSUPERUSER NOCREATEROLE) if provisioning did not. Returns True when
        the role had to be created."""
        created = not self.role_exists(role)
        verb = "CREATE" if created else "ALTER"
        attrs = "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE " if created else ""
        self.psql(f"{verb} ROLE {identifier(role)} WITH {attrs}PASSWORD {literal(password)};")
        return created

    def database_exists(self, name: str) -> bool:
        out = self.psql(f"SELECT 1 FROM pg_database WHERE datname = {literal(name)};").stdout
        return out.strip() == "1"

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE);")


def write_tuning(layout: Layout, major: str, body: str) -> tuple[Path, bool]:
    """Write conf.d/50-odoo-image-tuning.conf; returns (path, changed)."""
    conf_d = layout.pg_conf_d(major)
    ensure_dir(conf_d, 0o755)
    target = conf_d / paths.PG_TUNING_NAME
    return target, write_atomic(target, body, mode=0o644)
