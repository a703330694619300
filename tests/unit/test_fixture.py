"""The Odoo-shaped TEST FIXTURE (not Odoo), packed and run for real.

The archive tests need nothing. The rest run the fixture from its packed archive (unpacked
with --strip-components=1, as provisioning does) in a venv holding Odoo 18's own pins for
this Python (from the fixture's requirements.txt, plus setuptools 80.9.0 as the image
installs it), against a throw-away PostgreSQL cluster started as an unprivileged user.
The venv is built once and cached under cache_dir()/fixture-venv/; set
ODOO_FIXTURE_PYTHON to use an existing interpreter instead. Without PyPI or PostgreSQL
binaries those tests skip and say why.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import pytest

from odoo_image.paths import REPO_ROOT, cache_dir

sys.path.insert(0, str(REPO_ROOT / "cloud_init"))

from odoo_firstboot import database as firstboot_db

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
SHARED_REQUIREMENTS = REPO_ROOT.parent / "shared" / "odoo-18.0" / "requirements.txt"
# What the fixture imports, with the pins Odoo's requirements.txt gives this Python.
FIXTURE_DEPS = ("Werkzeug", "psycopg2", "gevent", "greenlet", "passlib", "lxml", "psutil")
PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin"))
LOG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<pid>\d+) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<db>\S+) (?P<logger>[\w.]+): (?P<msg>.*) (?P<perf>|\d+ \d+\.\d{3} \d+\.\d{3})$")


def _load_make_fixture():
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURES / "make_fixture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixture = _load_make_fixture()


# ------------------------------------------------------------------ archive


def test_archive_is_byte_identical_across_builds(tmp_path: Path) -> None:
    first, sha1 = make_fixture.build_fixture_archive(tmp_path / "a")
    second, sha2 = make_fixture.build_fixture_archive(tmp_path / "b")
    assert first.name == "odoo-18.0-fixture.tar.gz"
    assert first.read_bytes() == second.read_bytes()
    assert sha1 == sha2 == hashlib.sha256(first.read_bytes()).hexdigest()
    assert not list((tmp_path / "a").glob(".*.part"))


def test_archive_has_odoo_layout(tmp_path: Path) -> None:
    path, _ = make_fixture.build_fixture_archive(tmp_path)
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        names = list(members)
        assert names == sorted(names)
        assert {n.split("/", 1)[0] for n in names} == {"odoo-18.0"}
        assert members["odoo-18.0/odoo-bin"].mode == 0o755
        assert all(m.mtime == make_fixture.MTIME and m.uid == 0 and m.gid == 0 for m in members.values())
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        for required in ("odoo-bin", "requirements.txt", "odoo/release.py", "odoo/addons/base/__manifest__.py",
                         "addons/web/__manifest__.py", "README.md"):
            assert f"odoo-18.0/{required}" in members
        requirements = tar.extractfile("odoo-18.0/requirements.txt").read()  # type: ignore[union-attr]
    if SHARED_REQUIREMENTS.is_file():
        assert requirements == SHARED_REQUIREMENTS.read_bytes(), "the fixture must carry Odoo's own requirements.txt"


def test_every_fixture_file_says_it_is_a_test_fixture() -> None:
    root = make_fixture.FIXTURE_DIR
    for path in make_fixture._entries(root):
        if path.is_dir() or path.name == "requirements.txt":  # Odoo's file, verbatim
            continue
        head = path.read_text().splitlines()[:3]
        assert any("TEST FIXTURE" in line for line in head), f"{path.relative_to(root)} lacks the label"


def test_release_matches_odoo_18() -> None:
    spec = importlib.util.spec_from_file_location("fixture_release", make_fixture.FIXTURE_DIR / "odoo" / "release.py")
    assert spec and spec.loader
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    assert release.version_info[:5] == (18, 0, 0, "final", 0)
    assert release.version == release.serie == "18.0"


# ------------------------------------------------------------ environment


@pytest.fixture(scope="session")
def odoo_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture unpacked from its archive exactly as provisioning unpacks Odoo."""
    out = tmp_path_factory.mktemp("archive")
    archive, _ = make_fixture.build_fixture_archive(out)
    src = tmp_path_factory.mktemp("src")
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(src), "--strip-components=1"], check=True)
    os.chmod(src, 0o755)
    return src


@pytest.fixture(scope="session")
def python(odoo_src: Path) -> str:
    given = os.environ.get("ODOO_FIXTURE_PYTHON")
    if given:
        return given
    requirements = odoo_src / "requirements.txt"
    wanted = [line for line in requirements.read_text().splitlines()
              if re.match(rf"^({'|'.join(FIXTURE_DEPS)})\s*[=;]", line, re.I)]
    key = hashlib.sha256(("\n".join(wanted) + sys.version).encode()).hexdigest()[:16]
    venv = cache_dir() / "fixture-venv" / key
    py = venv / "bin" / "python3"
    if not py.exists():
        tmp = venv.with_name(venv.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        reqs = tmp.parent / f"{key}.requirements.txt"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        reqs.write_text("\n".join(wanted) + "\nsetuptools==80.9.0\n")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
            subprocess.run([str(tmp / "bin" / "pip"), "install", "-q", "-r", str(reqs)], check=True,
                           capture_output=True, text=True, timeout=900)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"cannot build the fixture venv: {(exc.stderr or exc.stdout or '').strip()[-300:]}")
        # venvs hard-code their own path: build in place under a temp name, then re-create
        # the scripts by running venv again at the final name.
        os.rename(tmp, venv)
        subprocess.run([sys.executable, "-m", "venv", "--upgrade", str(venv)], check=True, capture_output=True)
    return str(py)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_tool(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        if (directory / name).is_file():
            return str(directory / name)
    return shutil.which(name)


class Postgres:
    def __init__(self, base: Path) -> None:
        self.initdb, self.pg_ctl, self.psql = (_pg_tool(n) for n in ("initdb", "pg_ctl", "psql"))
        if not (self.initdb and self.pg_ctl and self.psql):
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, psql) not found")
        self.dir, self.port = base, _free_port()
        self.data = base / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            # root cannot run postgres: run the cluster as nobody, in a directory it owns
            # outside pytest's 0700 root-owned temp tree.
            self.prefix = ["runuser", "-u", "nobody", "--"]
            shutil.chown(base, "nobody")

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self.prefix + argv, check=True, capture_output=True, text=True, cwd="/")

    def start(self) -> None:
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])  # type: ignore[list-item]
        self._run([self.pg_ctl, "-D", str(self.data), "-w", "-l", str(self.dir / "pg.log"), "-o",  # type: ignore[list-item]
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"])
        self.sql("CREATE ROLE odoo LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD 'odoo-pw'")

    def stop(self) -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],  # type: ignore[list-item]
                       capture_output=True, cwd="/")

    def sql(self, query: str, db: str = "postgres", user: str = "postgres") -> str:
        res = subprocess.run([self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db,  # type: ignore[list-item]
                              "-XAtc", query], check=True, capture_output=True, text=True)
        return res.stdout.strip()


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    base = Path(tempfile.mkdtemp(prefix="odoo-fixture-pg-"))
    try:
        server = Postgres(base)
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Odoo:
    """Runs odoo-bin from the unpacked archive with a config file, like the image does."""

    def __init__(self, python: str, src: Path, work: Path, **options: object) -> None:
        self.python, self.src, self.work = python, src, work
        work.mkdir(parents=True, exist_ok=True)
        self.http_port, self.gevent_port = _free_port(), _free_port()
        self.logfile = work / "odoo.log"
        self.conf = work / "odoo.conf"
        opts: dict[str, object] = {
            "admin_passwd": "admin", "db_host": "127.0.0.1", "db_port": 1, "db_user": "odoo",
            "db_password": "odoo-pw", "http_interface": "127.0.0.1", "http_port": self.http_port,
            "gevent_port": self.gevent_port, "data_dir": work / "data", "logfile": self.logfile,
            "addons_path": f"{src}/addons,{src}/odoo/addons", "list_db": False, "without_demo": "all",
        }
        opts.update(options)
        self.conf.write_text("[options]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        self.proc: subprocess.Popen[str] | None = None

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, str(self.src / "odoo-bin"), *args[:1], "-c", str(self.conf), *args[1:]]
                              if args and not args[0].startswith("-") else
                              [self.python, str(self.src / "odoo-bin"), "-c", str(self.conf), *args],
                              input=stdin, capture_output=True, text=True, timeout=120)

    def start(self, *args: str) -> Odoo:
        self.proc = subprocess.Popen([self.python, str(self.src / "odoo-bin"), "-c", str(self.conf), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.wait_port(self.http_port)
        return self

    def wait_port(self, port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"odoo-bin exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"nothing listens on {port}; log: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # the master stops its workers and gevent child
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.http_port}{path}"


def _get(url: str, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _websocket(port: int, path: str = "/websocket") -> str:
    """Raw handshake; returns the status line."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Origin: http://127.0.0.1:{port}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"HTTP/1.1 101"):
            expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            assert b"Sec-WebSocket-Accept: " + expected in head
            s.sendall(bytes([0x88, 0x80]) + os.urandom(4))  # masked close frame
    return head.split(b"\r\n", 1)[0].decode()


def _assert_odoo_log_format(text: str) -> list[re.Match[str]]:
    matches = []
    for line in text.splitlines():
        if not line or line.startswith((" ", "Traceback", "\t")) or not line[:4].isdigit():
            continue  # traceback continuation lines
        match = LOG_LINE.match(line)
        assert match, f"not in Odoo's log format: {line!r}"
        matches.append(match)
    assert matches
    return matches


# -------------------------------------------------------- without PostgreSQL


def test_help_version_and_postgres_user_refusal(python: str, odoo_src: Path, tmp_path: Path) -> None:
    odoo = Odoo(python, odoo_src, tmp_path)
    help_out = odoo.run("--help")
    assert help_out.returncode == 0 and "--stop-after-init" in help_out.stdout and "--db-filter" in help_out.stdout
    assert odoo.run("--version").stdout.strip() == "Odoo Server 18.0"
    refused = Odoo(python, odoo_src, tmp_path / "pg", db_user="postgres").run("--stop-after-init")
    assert refused.returncode == 1
    assert "Using the database user 'postgres' is a security risk, aborting." in refused.stderr


def test_bad_addons_path_is_refused(python: str, odoo_src: Path, tmp_path: Path) -> None:
    res = Odoo(python, odoo_src, tmp_path, addons_path=tmp_path / "missing").run("--stop-after-init")
    assert res.returncode == 2 and "no such directory" in res.stderr


def test_health_and_log_format_with_postgres_down(python: str, odoo_src: Path, tmp_path: Path) -> None:
    odoo = Odoo(python, odoo_src, tmp_path).start()  # db_port 1: nothing answers
    try:
        status, headers, body = _get(odoo.url("/web/health"))
        assert (status, json.loads(body)) == (200, {"status": "pass"})
        assert headers["Content-Type"] == "application/json" and "session_id" not in headers.get("Set-Cookie", "")
        status, _, body = _get(odoo.url("/web/health?db_server_status=1"))
        assert (status, json.loads(body)) == (500, {"status": "fail", "db_server_status": False})
    finally:
        odoo.stop()
    matches = _assert_odoo_log_format(odoo.log())
    first = matches[0]
    assert (first["db"], first["logger"], first["msg"]) == ("?", "odoo", "Odoo version 18.0")
    stamp = datetime.strptime(first["ts"], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=2), "log timestamps must be UTC"
    access = [m for m in matches if m["logger"] == "werkzeug"]
    assert any('"GET /web/health HTTP/1.1" 200' in m["msg"] and m["perf"] for m in access)
    assert all(m["perf"] == "" for m in matches if m["logger"] != "werkzeug")


# ----------------------------------------------------------- with PostgreSQL


@pytest.fixture(scope="module")
def db(pg: Postgres, python: str, odoo_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Odoo:
    # A hashed master password, as the image writes it at first boot.
    hashed = subprocess.run([python, "-c", "from passlib.context import CryptContext as C; "
                             "print(C(['pbkdf2_sha512'], pbkdf2_sha512__rounds=600000).hash('master-secret'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    odoo = Odoo(python, odoo_src, tmp_path_factory.mktemp("odoo"), db_port=pg.port, proxy_mode=True,
                x_sendfile=True, admin_passwd=hashed)
    res = odoo.run("-d", "t1", "-i", "base", "--without-demo=all", "--stop-after-init")
    assert res.returncode == 0, res.stderr + odoo.log()
    return odoo


def test_init_creates_database_like_odoo(db: Odoo, pg: Postgres) -> None:
    assert pg.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 't1'") == "odoo"
    assert pg.sql("SELECT state, latest_version, demo FROM ir_module_module WHERE name = 'base'", "t1") == \
        "installed|18.0.1.3|f"
    installed = pg.sql("SELECT string_agg(name, ',' ORDER BY name) FROM ir_module_module "
                       "WHERE state = 'installed'", "t1")
    assert installed == "base,bus,web"
    assert pg.sql("SELECT password FROM res_users WHERE login = 'admin'", "t1").startswith("$pbkdf2-sha512$600000$")
    assert pg.sql("SELECT count(*) FROM res_users WHERE login = 'demo'", "t1") == "0"
    assert "odoo.modules.loading: Modules loaded." in db.log()
    res = db.run("-d", "t1", "-u", "all", "--stop-after-init")
    assert res.returncode == 0, res.stderr


def test_shell_changes_admin_credentials(db: Odoo, pg: Postgres) -> None:
    script = "env.ref('base.user_admin').write({'login': 'boss@example.com', 'password': 'S3cret!'}); env.cr.commit()\n"
    res = db.run("shell", "-d", "t1", stdin=script)
    assert res.returncode == 0, res.stderr
    assert pg.sql("SELECT login FROM res_users WHERE id = 2", "t1") == "boss@example.com"
    # Without commit nothing sticks, as in Odoo's shell.
    db.run("shell", "-d", "t1", stdin="env.ref('base.user_admin').write({'login': 'other'})\n")
    assert pg.sql("SELECT login FROM res_users WHERE id = 2", "t1") == "boss@example.com"


def test_shell_env_stays_strict(db: Odoo) -> None:
    """Unknown models, fields and methods fail as in Odoo: that is how wrong scripts get caught."""
    admin = "env.ref('base.user_admin')"
    for script, error in (
        (f"{admin}.write({{'emial': 'a@example.com'}})", "ValueError: Invalid field 'emial' on model 'res.users'"),
        ("env['res.nope']", "KeyError: 'res.nope'"),
        (f"{admin}.write({{'lang': 'de_DE'}})", "ValueError: Wrong value for res.partner.lang: 'de_DE'"),  # inactive
        ("env['res.lang']._update_translations('fr_FR')", "AttributeError: _update_translations"),
        (f"{admin}.nope", "AttributeError: nope"),
    ):
        res = db.run("shell", "-d", "t1", stdin=script + "\n")
        assert res.returncode != 0 and error in res.stderr, (script, res.stderr[-600:])


def _firstboot_args(argv: list[str]) -> list[str]:
    """odoo-bin's arguments in a first-boot command line, without `-c CONF` (Odoo.run adds its own)."""
    args = argv[argv.index(str(firstboot_db.paths.ODOO_BIN)) + 1:]
    conf = args.index("-c")
    return args[:conf] + args[conf + 2:]


def test_firstboot_finaliser_script(db: Odoo, pg: Postgres) -> None:
    """cloud_init's odoo_firstboot creates a database with these exact odoo-bin calls and script."""
    conf = PurePosixPath(db.conf)
    req = firstboot_db.CreateRequest(name="fb1", modules=(), demo=False, admin_login="boss@example.be",
                                     admin_password="N3w s3cret!", language="fr_FR", country="BE",
                                     database_secret="secret-" + os.urandom(8).hex())
    try:
        _check_firstboot_finaliser(db, pg, conf, req)
    finally:  # the other tests expect t1 to be the only database (websocket, dbfilter)
        pg.sql(f'DROP DATABASE IF EXISTS "{req.name}" WITH (FORCE)')
        shutil.rmtree(db.work / "data" / "filestore" / req.name, ignore_errors=True)


def _check_firstboot_finaliser(db: Odoo, pg: Postgres, conf: PurePosixPath,
                               req: firstboot_db.CreateRequest) -> None:
    res = db.run(*_firstboot_args(firstboot_db.install_argv(conf, req.name, ("base",), req.demo)))
    assert res.returncode == 0, res.stderr + db.log()[-2000:]

    def q(query: str) -> str:
        return pg.sql(query, req.name)

    assert q("SELECT code FROM res_lang WHERE active") == "en_US"
    assert q("SELECT c.name, cur.name FROM res_company c JOIN res_currency cur ON cur.id = c.currency_id") == \
        "My Company|USD"
    secret_at_init = q("SELECT value FROM ir_config_parameter WHERE key = 'database.secret'")
    assert secret_at_init, "Odoo creates database.secret at init"

    shell = db.run(*_firstboot_args(firstboot_db.shell_argv(conf, req.name)), stdin=firstboot_db.shell_script(req))
    assert shell.returncode == 0, shell.stderr
    assert firstboot_db._parse_result(shell.stdout) == {"lang": True, "country": True}
    admin = "FROM res_users u JOIN res_partner p ON p.id = u.partner_id WHERE u.id = 2"
    assert q(f"SELECT u.login, p.email, p.lang {admin}") == "boss@example.be|boss@example.be|fr_FR"
    assert q("SELECT code FROM res_lang WHERE active ORDER BY code") == "en_US\nfr_FR"
    company = q("""SELECT c.id, c.name, co.code, cur.name, cur.active FROM res_company c
                   JOIN res_partner p ON p.id = c.partner_id JOIN res_country co ON co.id = p.country_id
                   JOIN res_currency cur ON cur.id = c.currency_id""")
    assert company == "1|My Company|BE|EUR|t"
    assert q("SELECT value FROM ir_config_parameter WHERE key = 'database.secret'") == req.database_secret

    db.start()
    try:
        common = xmlrpc.client.ServerProxy(db.url("/xmlrpc/2/common"))
        assert common.authenticate(req.name, req.admin_login, req.admin_password, {}) == 2
        assert common.authenticate(req.name, "admin", "admin", {}) is False
    finally:
        db.stop()

    # A language or country Odoo does not know is reported; the rest still applies.
    again = replace(req, admin_login="admin2", language="xx_XX", country="ZZ")
    shell = db.run(*_firstboot_args(firstboot_db.shell_argv(conf, req.name)), stdin=firstboot_db.shell_script(again))
    assert shell.returncode == 0, shell.stderr
    assert firstboot_db._parse_result(shell.stdout) == {"lang": False, "country": False}
    assert q(f"SELECT u.login, p.email, p.lang {admin}") == "admin2|boss@example.be|fr_FR"
    assert q("SELECT co.code FROM res_company c JOIN res_partner p ON p.id = c.partner_id "
             "JOIN res_country co ON co.id = p.country_id") == "BE"


def test_prefork_server_surfaces(db: Odoo, pg: Postgres) -> None:
    db.start("--workers=2")
    try:
        db.wait_port(db.gevent_port)
        assert _get(db.url("/web/health"))[0] == 200
        # websocket: only the gevent process can take the socket over.
        assert " 500 " in _websocket(db.http_port)
        assert _websocket(db.gevent_port).startswith("HTTP/1.1 101")
        for page in ("/web/database/manager", "/web/database/selector"):
            assert _get(db.url(page))[0] == 200
        # list_db = False: management refused, and logged as Odoo does.
        status, _, body = _get(db.url("/web/database/create"),
                               data=b"master_pwd=master-secret&name=t2&login=a&password=b")
        assert status == 200 and b"Access Denied" in body
        assert pg.sql("SELECT count(*) FROM pg_database WHERE datname = 't2'") == "0"
        # XML-RPC login, client IP from X-Forwarded-For only with X-Forwarded-Host (proxy_mode).
        common = xmlrpc.client.ServerProxy(db.url("/xmlrpc/2/common"))
        assert common.version()["server_version_info"][:2] == [18, 0]
        assert common.authenticate("t1", "boss@example.com", "S3cret!", {}) == 2
        proxied = {"X-Forwarded-Host": "erp.example.com", "X-Forwarded-For": "203.0.113.7",
                   "Content-Type": "application/json"}
        payload = json.dumps({"jsonrpc": "2.0", "method": "call",
                              "params": {"db": "t1", "login": "admin", "password": "wrong"}}).encode()
        _, _, body = _get(db.url("/web/session/authenticate"), headers=proxied, data=payload)
        assert json.loads(body)["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
        _get(db.url("/web/session/authenticate"), data=payload,
             headers={"X-Forwarded-For": "198.51.100.9", "Content-Type": "application/json"})
        # Filestore download handed to NGINX with x_sendfile.
        obj = xmlrpc.client.ServerProxy(db.url("/xmlrpc/2/object"))
        att = obj.execute_kw("t1", 2, "S3cret!", "ir.attachment", "create",
                             [{"name": "a.txt", "datas": base64.b64encode(b"hello").decode(), "public": True}])
        status, headers, body = _get(db.url(f"/web/content/{att}"))
        sha = hashlib.sha1(b"hello").hexdigest()
        assert status == 200 and body == b""
        assert headers["X-Accel-Redirect"] == f"/web/filestore/t1/{sha[:2]}/{sha}"
    finally:
        db.stop()
    log = db.log()
    _assert_odoo_log_format(log)
    assert "ERROR t1 odoo.http: Exception during request handling." in log
    assert "Couldn't bind the websocket. Is the connection opened on the evented port" in log
    assert "ERROR ? odoo.service.db: Database management functions blocked, admin disabled database listing" in log
    users = "odoo.addons.base.models.res_users"
    assert re.search(rf" INFO t1 {users}: Login successful for db:t1 login:boss@example.com from 127\.0\.0\.1 $",
                     log, re.M)
    assert re.search(rf" INFO t1 {users}: Login failed for db:t1 login:admin from 203\.0\.113\.7 $", log, re.M)
    assert re.search(rf" INFO t1 {users}: Login failed for db:t1 login:admin from 127\.0\.0\.1 $", log, re.M), \
        "X-Forwarded-For without X-Forwarded-Host must not change the client IP"
    assert "Evented Service (longpolling) running on 127.0.0.1:" in log
