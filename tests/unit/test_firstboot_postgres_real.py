"""The SQL and the tuning file first boot produces, against a real, throwaway PostgreSQL.

Runs only as root on a host with PostgreSQL server binaries (Debian layout) and a
`postgres` user; a private cluster in a temp dir on its own socket, never the host's.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cloud_init"))

from odoo_firstboot.postgres import Postgres
from odoo_firstboot.runner import Completed, SubprocessRunner
from odoo_firstboot.settings import GiB
from odoo_firstboot.tuning import compute, render_postgresql

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))


def _postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not BINDIRS or not _postgres_user() or shutil.which("runuser") is None,
    reason="needs root, PostgreSQL server binaries and the postgres user",
)

PORT = "55439"


class SocketRunner(SubprocessRunner):
    """Points first boot's `runuser -u postgres -- psql ...` at the private cluster."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir

    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        args = list(argv)
        if "psql" in args:
            at = args.index("psql") + 1
            args[at:at] = ["-h", str(self.socket_dir), "-p", PORT]
        return super().run(args, input_text=input_text, timeout=timeout, check=check, env=env)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Path, Path]]:
    # Not under pytest's tmp dir: that is 0700 root, the postgres user cannot reach it.
    base = Path(tempfile.mkdtemp(prefix="odoo-firstboot-pg-"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    bindir = BINDIRS[-1]
    as_pg = ["runuser", "-u", "postgres", "--"]
    try:
        for d in (data, sock):
            d.mkdir()
            shutil.chown(d, "postgres", "postgres")
        initdb = [*as_pg, f"{bindir}/initdb", "-D", str(data), "-A", "peer", "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True)
        conf_d = data / "conf.d"
        conf_d.mkdir()
        shutil.chown(conf_d, "postgres", "postgres")
        with (data / "postgresql.conf").open("a") as fh:
            fh.write(f"include_dir = 'conf.d'\nlisten_addresses = ''\nport = {PORT}\n")
            fh.write(f"unix_socket_directories = '{sock}'\n")
        # The tuning drop-in first boot writes for a 2 GiB machine, exactly as rendered.
        (conf_d / "50-odoo-image-tuning.conf").write_text(render_postgresql(compute(2 * GiB, 2)))
        start = [*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-l", str(data / "server.log"), "-w", "start"]
        subprocess.run(start, check=True, capture_output=True)
        yield data, sock
    finally:
        stop = [*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(stop, capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_tuning_file_is_accepted_and_applied(cluster: tuple[Path, Path]) -> None:
    _, sock = cluster
    pg = Postgres(SocketRunner(sock))
    pg.wait_ready(timeout=10)
    expected = compute(2 * GiB, 2)
    shown = pg.psql("SHOW shared_buffers; SHOW max_connections; SHOW random_page_cost;").stdout.split()
    assert shown == ["512MB", str(expected.max_connections), "1.1"]


def test_role_password_and_database_lifecycle(cluster: tuple[Path, Path]) -> None:
    _, sock = cluster
    pg = Postgres(SocketRunner(sock), sleep=lambda s: None)
    assert pg.set_role_password("odoo_fb_test", "s3cret'with\"quotes") is True  # created
    assert pg.role_exists("odoo_fb_test")
    attrs = pg.psql(
        "SELECT rolcanlogin, rolcreatedb, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'odoo_fb_test';"
    ).stdout.strip()
    assert attrs == "t|t|f|f"
    assert pg.set_role_password("odoo_fb_test", "another") is False  # altered, not re-created
    assert not pg.database_exists("fb-test.db")
    pg.psql('CREATE DATABASE "fb-test.db";')
    assert pg.database_exists("fb-test.db")
    pg.drop_database("fb-test.db")
    assert not pg.database_exists("fb-test.db")
    pg.drop_database("fb-test.db")  # IF EXISTS: idempotent
    pg.psql('DROP ROLE "odoo_fb_test";')
