"""The whole first boot (and tune, certbot retry, assemble) in a temporary root.

External tools are faked by FakeRunner except `openssl`, which is the real one: the
self-signed certificate must really be made and really carry the right names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cloud_init"))

from odoo_firstboot import letsencrypt, main, odoo_conf, status
from odoo_firstboot.runner import CommandFailed, Completed, SubprocessRunner
from odoo_firstboot.secrets import pbkdf2_sha512_verify
from odoo_firstboot.settings import GiB
from odoo_firstboot.tuning import Machine

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

IP = "10.0.2.15"
BAKED_IMAGE_CONF = """\
[options]
http_interface = 127.0.0.1
proxy_mode = True
list_db = False
without_demo = all
data_dir = /var/lib/odoo
db_user = odoo
workers = 0
"""


class FakeRunner:
    """Records every command; answers like the real tools would on an instance."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = SubprocessRunner()
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.databases: set[str] = set()
        self.active: set[str] = {"postgresql.service", "certbot.timer"}
        self.enabled: set[str] = {"certbot.timer"}
        self.certbot_ok = False
        self.odoo_init_fails = False
        self.nginx_config_ok = True

    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        args = tuple(str(a) for a in argv)
        self.calls.append((args, input_text))
        result = self._answer(args, input_text)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def commands(self, prefix: Sequence[str]) -> list[tuple[str, ...]]:
        return [c for c, _ in self.calls if c[: len(prefix)] == tuple(prefix)]

    def _answer(self, a: tuple[str, ...], stdin: str | None) -> Completed:
        if a[0] == "openssl":
            return self.real.run(a, input_text=stdin, check=False)
        if a[0] == "systemctl":
            return self._systemctl(a)
        if a[0] == "ip":
            addr = [
                {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]},
                {"ifname": "eth0", "addr_info": [{"local": IP}, {"local": "fe80::1"}]},
            ]
            return Completed(a, 0, json.dumps(addr))
        if a[:3] == ("runuser", "-u", "postgres"):
            return self._psql(a, stdin or "")
        if a[:3] == ("runuser", "-u", "odoo"):
            return self._odoo(a)
        if a[0] == "certbot":
            if not self.certbot_ok:
                return Completed(a, 1, "", "Failed to connect to acme-v02.api.letsencrypt.org")
            domain = a[a.index("-d") + 1]
            live = self.root / "etc/letsencrypt/live" / domain
            live.mkdir(parents=True, exist_ok=True)
            (live / "fullchain.pem").write_text("LE CERT\n")
            (live / "privkey.pem").write_text("LE KEY\n")
            return Completed(a, 0, "Successfully received certificate.")
        if a[:2] == ("nginx", "-t"):
            return Completed(a, 0 if self.nginx_config_ok else 1, "", "nginx: [emerg] unexpected end of file")
        return Completed(a, 0)

    def _systemctl(self, a: tuple[str, ...]) -> Completed:
        verb, unit = a[1], a[-1]
        if verb == "is-active":
            return Completed(a, 0 if unit in self.active else 3)
        if verb == "is-enabled":
            return Completed(a, 0 if unit in self.enabled else 1)
        if verb == "enable":
            self.enabled.add(unit)
            if "--now" in a:
                self.active.add(unit)
        elif verb == "disable":
            self.enabled.discard(unit)
            if "--now" in a:
                self.active.discard(unit)
        elif verb in ("start", "restart", "reload-or-restart"):
            self.active.add(unit)
        return Completed(a, 0)

    def _psql(self, a: tuple[str, ...], sql: str) -> Completed:
        if "pg_database" in sql:
            name = re.search(r"datname = '([^']*)'", sql)
            return Completed(a, 0, "1\n" if name and name.group(1) in self.databases else "")
        if "pg_roles" in sql:
            return Completed(a, 0, "1\n")
        if "ir_module_module" in sql:
            names = re.findall(r"'([a-z0-9_]+)'", sql)
            return Completed(a, 0, "".join(f"{n}|installed\n" for n in names if n != "nonexistent_mod"))
        if sql.startswith("DROP DATABASE"):
            self.databases.discard(re.findall(r'"([^"]+)"', sql)[0])
        return Completed(a, 0, "1\n" if sql.strip() == "SELECT 1;" else "")

    def _odoo(self, a: tuple[str, ...]) -> Completed:
        name = a[a.index("-d") + 1]
        if "shell" in a:
            return Completed(a, 0, 'ODOO_IMAGE_RESULT {"lang": true, "country": true}\n')
        if self.odoo_init_fails:
            return Completed(a, 1, "", "psycopg2.OperationalError: boom")
        self.databases.add(name)
        return Completed(a, 0)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: {2 * GiB // 1024} kB\n")
    (tmp_path / "etc/postgresql/15/main/conf.d").mkdir(parents=True)
    (tmp_path / "etc/odoo/conf.d").mkdir(parents=True)
    (tmp_path / "etc/odoo/conf.d/00-image.conf").write_text(BAKED_IMAGE_CONF)
    (tmp_path / "etc/odoo-image").mkdir(parents=True)
    # The baked NGINX sites; the image enables the "starting" one.
    available = tmp_path / "etc/nginx/sites-available"
    available.mkdir(parents=True)
    (available / "odoo.conf").write_text("server { include /etc/odoo-image/nginx/server_name.conf; }\n")
    (available / "odoo-starting.conf").write_text("server { location / { return 503; } }\n")
    (tmp_path / "etc/nginx/sites-enabled").mkdir()
    (tmp_path / "etc/nginx/sites-enabled/odoo.conf").symlink_to("../sites-available/odoo-starting.conf")
    return tmp_path


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_host(root: Path, runner: FakeRunner, *, resolves_here: bool = False, clock: Clock | None = None) -> main.Host:
    return main.Host(
        root=root,
        runner=runner,
        gid_of=lambda group: os.getgid(),
        addresses=lambda: [IP],
        resolve=lambda domain: [IP] if resolves_here else [],
        http_probe=lambda domain: False,
        clock=clock or Clock(),
        sleep=lambda seconds: None,
    )


def settings(root: Path, text: str) -> None:
    (root / "etc/odoo-image/settings.yaml").write_text(text)


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def status_of(root: Path) -> dict:
    return json.loads(read(root, "var/lib/odoo-image/firstboot.json"))


def san_of(cert: Path) -> str:
    argv = ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName,basicConstraints"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def all_argv_text(runner: FakeRunner) -> str:
    return "\n".join(" ".join(c) for c, _ in runner.calls)


def test_firstboot_without_settings(root: Path) -> None:
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0

    # conf.d written, secrets only in the 0640 drop-in and the assembled file.
    secrets_conf = root / "etc/odoo/conf.d/10-secrets.conf"
    assert mode(secrets_conf) == 0o640
    for name in ("20-tuning.conf", "30-site.conf"):
        assert (root / "etc/odoo/conf.d" / name).is_file()
    assert "dbfilter" not in read(root, "etc/odoo/conf.d/30-site.conf")

    conf = root / "etc/odoo/odoo.conf"
    assert mode(conf) == 0o640 and conf.stat().st_gid == os.getgid()
    text = conf.read_text()
    assert "admin_passwd = admin\n" not in text
    options = odoo_conf.read_dropin(conf)["options"]
    credentials = dict(
        line.split(" = ", 1) for line in read(root, "var/lib/odoo-image/credentials").splitlines() if " = " in line
    )
    assert pbkdf2_sha512_verify(credentials["master_password"], options["admin_passwd"])
    assert options["workers"] == "2" and options["list_db"] == "False"  # tuning over image default
    assert credentials["url"] == f"https://{IP}/"
    assert mode(root / "var/lib/odoo-image/credentials") == 0o600
    assert mode(root / "var/lib/odoo-image/secrets.json") == 0o600

    # No secret on any command line; the role password went to psql on stdin.
    secrets_json = json.loads(read(root, "var/lib/odoo-image/secrets.json"))
    argv_text = all_argv_text(runner)
    for value in secrets_json.values():
        assert value not in argv_text
    alter = [stdin for c, stdin in runner.calls if stdin and "ROLE" in stdin]
    assert alter and secrets_json["db_password"] in alter[0]

    # PostgreSQL tuning for 2 GiB.
    pg = read(root, "etc/postgresql/15/main/conf.d/50-odoo-image-tuning.conf")
    assert "shared_buffers = 512MB" in pg and "effective_cache_size = 1024MB" in pg

    # Self-signed certificate for the instance IP, made with the real openssl.
    fullchain = root / "etc/odoo-image/tls/fullchain.pem"
    assert fullchain.is_symlink() and not os.readlink(fullchain).startswith("/")
    san = san_of(fullchain)
    assert f"IP Address:{IP}" in san and "CA:FALSE" in san
    assert mode((root / "etc/odoo-image/tls/privkey.pem").resolve()) == 0o600

    # NGINX: includes written, switched to the Odoo site after the certificate; Odoo last.
    assert read(root, "etc/odoo-image/nginx/server_name.conf").endswith("\nserver_name _;\n")
    assert "Strict-Transport-Security" not in read(root, "etc/odoo-image/nginx/hsts.conf")
    assert os.readlink(root / "etc/nginx/sites-enabled/odoo.conf") == "../sites-available/odoo.conf"
    assert (root / "var/www/letsencrypt").is_dir()
    systemctl = runner.commands(["systemctl"])
    order = [c for c in systemctl if c[1] in ("reload-or-restart", "start")]
    assert order[0] == ("systemctl", "reload-or-restart", "nginx.service")
    assert order[-1] == ("systemctl", "start", "--no-block", "odoo.service")
    assert not runner.commands(["certbot"])
    assert ("systemctl", "disable", "--now", "odoo-certbot-retry.timer") in systemctl

    st = status_of(root)
    assert st["state"] == "done" and st["errors"] == [] and st["problems"] == []
    names = [s["name"] for s in st["steps"]]
    assert names == [
        "settings", "secrets", "odoo-conf.d", "tuning", "tls", "nginx",
        "postgresql", "letsencrypt", "odoo.conf", "database", "finish",
    ]  # fmt: skip
    assert all(s["state"] in ("ok", "skipped") and s["seconds"] >= 0 for s in st["steps"])
    assert (root / "var/lib/odoo-image/firstboot.done").is_file()
    assert status.banner_line(st).startswith(f"Odoo image: ready at https://{IP}/")
    motd = root / "etc/update-motd.d/60-odoo-image"
    assert mode(motd) == 0o755 and motd.read_text().startswith("#!/usr/bin/python3 -I\n")


def snapshot(root: Path) -> dict[str, bytes]:
    keep = ("etc", "var/lib/odoo-image")
    out = {}
    for base in keep:
        for path in sorted((root / base).rglob("*")):
            if path.is_file() and path.name != "firstboot.json":
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def test_second_run_is_a_no_op_and_forced_rerun_is_idempotent(root: Path) -> None:
    settings(root, "database: erp\nmodules: [sale]\ndomain: erp.example.com\nletsencrypt_email: ops@example.com\n")
    runner = FakeRunner(root)
    host = make_host(root, runner)
    assert main.firstboot(host) == 0
    before = snapshot(root)

    runner.calls.clear()
    assert main.firstboot(host) == 0  # firstboot.done exists: nothing at all happens
    assert runner.calls == []

    assert main.firstboot(host, force=True) == 0
    after = snapshot(root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # Only the retry bookkeeping and the marker's timestamp may move; secrets, keys,
    # certificates and configuration stay byte-identical.
    assert changed <= {"var/lib/odoo-image/certbot-retry.json", "var/lib/odoo-image/firstboot.done"}
    assert not [c for c in runner.commands(["runuser", "-u", "odoo"])]  # database exists: skipped
    assert status_of(root)["state"] == "done"


def test_domain_sets_dbfilter_server_name_and_falls_back_to_self_signed(root: Path) -> None:
    settings(root, "domain: erp.example.com\nletsencrypt_email: ops@example.com\n")
    runner, clock = FakeRunner(root), Clock()
    assert main.firstboot(make_host(root, runner, clock=clock)) == 0

    assert read(root, "etc/odoo/conf.d/30-site.conf").endswith("dbfilter = ^erp$\n")
    assert "dbfilter = ^erp$" in read(root, "etc/odoo/odoo.conf")
    assert read(root, "etc/odoo-image/nginx/server_name.conf").endswith("\nserver_name erp.example.com;\n")
    assert "DNS:erp.example.com" in san_of(root / "etc/odoo-image/tls/fullchain.pem")
    assert "Strict-Transport-Security" not in read(root, "etc/odoo-image/nginx/hsts.conf")
    # The name does not resolve here: no certbot call, retry timer scheduled with backoff.
    assert not runner.commands(["certbot"])
    assert "odoo-certbot-retry.timer" in runner.enabled
    state = json.loads(read(root, "var/lib/odoo-image/certbot-retry.json"))
    assert state["attempts"] == 1 and state["next_attempt"] >= clock.now + letsencrypt.BACKOFF_BASE
    st = status_of(root)
    assert st["state"] == "done"
    assert any(p.startswith("letsencrypt: erp.example.com does not resolve") for p in st["problems"])


def test_letsencrypt_success_switches_links_and_turns_hsts_on(root: Path) -> None:
    settings(root, "domain: erp.example.com\nletsencrypt_email: ops@example.com\n")
    runner = FakeRunner(root)
    runner.certbot_ok = True
    assert main.firstboot(make_host(root, runner, resolves_here=True)) == 0
    (certbot,) = runner.commands(["certbot"])
    assert certbot[:3] == ("certbot", "certonly", "--webroot")
    assert "/var/www/letsencrypt" in certbot and "--non-interactive" in certbot
    assert read(root, "etc/odoo-image/tls/fullchain.pem") == "LE CERT\n"
    assert "letsencrypt/live/erp.example.com" in os.readlink(root / "etc/odoo-image/tls/privkey.pem")
    assert "Strict-Transport-Security" in read(root, "etc/odoo-image/nginx/hsts.conf")
    assert "odoo-certbot-retry.timer" not in runner.enabled
    assert "certbot.timer" in runner.enabled  # renewal verified as scheduled
    assert status_of(root)["problems"] == []

    # A forced re-run keeps the Let's Encrypt certificate and HSTS.
    assert main.firstboot(make_host(root, runner, resolves_here=True), force=True) == 0
    assert read(root, "etc/odoo-image/tls/fullchain.pem") == "LE CERT\n"
    assert "Strict-Transport-Security" in read(root, "etc/odoo-image/nginx/hsts.conf")


def test_certbot_retry_backs_off_with_jitter_then_succeeds(root: Path) -> None:
    settings(root, "domain: erp.example.com\nletsencrypt_email: ops@example.com\n")
    runner, clock = FakeRunner(root), Clock()
    assert main.firstboot(make_host(root, runner, resolves_here=True, clock=clock)) == 0
    assert len(runner.commands(["certbot"])) == 1  # resolved, tried, failed (LE unreachable)
    delays = []
    for _ in range(4):
        state = json.loads(read(root, "var/lib/odoo-image/certbot-retry.json"))
        delays.append(state["next_attempt"] - state["last_attempt"])
        clock.now = state["next_attempt"] - 60  # a tick before it is due does nothing
        main.certbot_retry(make_host(root, runner, resolves_here=True, clock=clock))
        assert json.loads(read(root, "var/lib/odoo-image/certbot-retry.json"))["attempts"] == state["attempts"]
        clock.now = state["next_attempt"] + 1
        main.certbot_retry(make_host(root, runner, resolves_here=True, clock=clock))
    assert len(runner.commands(["certbot"])) == 5
    assert delays == sorted(delays) and delays[-1] > 2 * delays[0]
    # Jitter: the delays are not exact multiples of the base.
    assert any(d % letsencrypt.BACKOFF_BASE for d in delays)

    runner.certbot_ok = True
    clock.now += 10 * 3600
    main.certbot_retry(make_host(root, runner, resolves_here=True, clock=clock))
    assert json.loads(read(root, "var/lib/odoo-image/certbot-retry.json"))["obtained"] is True
    assert "odoo-certbot-retry.timer" not in runner.enabled
    assert "Strict-Transport-Security" in read(root, "etc/odoo-image/nginx/hsts.conf")


def test_backoff_is_capped() -> None:
    import random

    rng = random.Random(1)
    assert letsencrypt.next_delay(50, rng) <= letsencrypt.BACKOFF_MAX * (1 + letsencrypt.JITTER_FRACTION)


def test_database_created_with_modules_in_one_call(root: Path) -> None:
    settings(
        root,
        "database: erp\nmodules: [crm, sale_management]\nadmin_login: boss@example.com\nlanguage: fr_BE\ncountry: be\n",
    )
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0
    odoo_calls = [(c, s) for c, s in runner.calls if c[:3] == ("runuser", "-u", "odoo")]
    (base, _), (shell, script), (mods, _) = odoo_calls
    assert base[base.index("-i") + 1] == "base" and "--without-demo=all" in base and "--stop-after-init" in base
    assert base[4:8] == ("/opt/odoo/venv/bin/python3", "/opt/odoo/src/odoo-bin", "-c", "/etc/odoo/odoo.conf")
    assert "shell" in shell and script is not None
    assert mods[mods.index("-i") + 1] == "crm,sale_management"
    creds = read(root, "var/lib/odoo-image/credentials")
    password = re.search(r"^admin_password = (\S+)$", creds, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert "admin_login = boss@example.com" in creds and len(password) >= 16
    assert repr(password) in script and "'boss@example.com'" in script and "'BE'" in script
    assert (
        "database.secret" in script
        and json.loads(read(root, "var/lib/odoo-image/secrets.json"))["database_secret"] in script
    )
    assert password not in all_argv_text(runner)
    assert "dbfilter = ^erp$" in read(root, "etc/odoo/odoo.conf")
    st = status_of(root)
    assert st["state"] == "done" and st["steps"][-2]["detail"].startswith("database erp created")


def test_demo_uses_a_config_without_the_baked_without_demo(root: Path) -> None:
    settings(root, "database: demo1\ndemo: true\n")
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0
    base = runner.commands(["runuser", "-u", "odoo"])[0]
    assert "--without-demo=all" not in base
    assert base[base.index("-c") + 1] == "/run/odoo-image/odoo-create-db.conf"
    assert not (root / "run/odoo-image/odoo-create-db.conf").exists()  # cleaned up


def test_database_failure_drops_it_and_keeps_odoo_off(root: Path) -> None:
    settings(root, "database: erp\n")
    runner = FakeRunner(root)
    runner.odoo_init_fails = True
    assert main.firstboot(make_host(root, runner)) == 1
    st = status_of(root)
    assert st["state"] == "failed"
    assert st["errors"] and "creating database erp failed" in st["errors"][0] and "boom" in st["errors"][0]
    assert [s["state"] for s in st["steps"]][-1] == "failed"
    assert any(stdin and stdin.startswith('DROP DATABASE IF EXISTS "erp"') for _, stdin in runner.calls)
    assert not (root / "var/lib/odoo-image/firstboot.done").exists()
    assert ("systemctl", "start", "--no-block", "odoo.service") not in runner.commands(["systemctl"])
    assert "FAILED" in status.banner_line(st)

    # Next boot: the unit runs again (no done marker) and succeeds.
    runner.odoo_init_fails = False
    assert main.firstboot(make_host(root, runner)) == 0
    assert status_of(root)["state"] == "done"


def test_bad_settings_are_reported_and_defaults_used(root: Path) -> None:
    settings(root, "domain: exa mple\nworkers: many\ncolour: blue\n")
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0
    st = status_of(root)
    assert st["state"] == "done"
    assert st["problems"] == [
        "settings.domain: 'exa mple' is not a valid DNS name",
        "settings.workers: 'many' is not an integer",
        "settings.colour: unknown setting, ignored",
    ]
    assert read(root, "etc/odoo-image/nginx/server_name.conf").endswith("\nserver_name _;\n")
    assert "workers = 2\n" in read(root, "etc/odoo/conf.d/20-tuning.conf")
    assert "3 setting problem(s)" in status.banner_line(st)


def test_tune_every_boot_follows_the_machine_and_operator_wins(root: Path) -> None:
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0
    small_pg = read(root, "etc/postgresql/15/main/conf.d/50-odoo-image-tuning.conf")
    small_odoo = read(root, "etc/odoo/conf.d/20-tuning.conf")
    secrets_before = read(root, "var/lib/odoo-image/secrets.json")

    # Resized to 6 GiB / 4 CPUs, plus an operator drop-in.
    (root / "proc/meminfo").write_text(f"MemTotal: {6 * GiB // 1024} kB\n")
    (root / "etc/odoo/conf.d/90-local.conf").write_text("limit_time_real = 3600\n")  # no header: [options]
    host = make_host(root, runner)
    host.machine = lambda: Machine(6 * GiB, 4)
    runner.active.discard("odoo.service")  # at boot tune runs before PostgreSQL and Odoo
    runner.active.discard("postgresql.service")
    runner.calls.clear()
    assert main.tune(host) == 0
    assert not runner.commands(["systemctl", "restart"])
    big_pg = read(root, "etc/postgresql/15/main/conf.d/50-odoo-image-tuning.conf")
    assert big_pg != small_pg and "shared_buffers = 1536MB" in big_pg
    assert read(root, "etc/odoo/conf.d/20-tuning.conf") != small_odoo
    options = odoo_conf.read_dropin(root / "etc/odoo/odoo.conf")["options"]
    assert options["workers"] == "9" and options["limit_time_real"] == "3600"
    assert read(root, "var/lib/odoo-image/secrets.json") == secrets_before

    # Run by hand with --restart while services run: only what changed is restarted.
    runner.active |= {"odoo.service", "postgresql.service"}
    settings(root, "limit_time_cpu: 300\n")  # changes Odoo's drop-in only
    assert main.tune(host, restart=True) == 0
    assert runner.commands(["systemctl", "restart"]) == [("systemctl", "restart", "odoo.service")]


def test_assemble_lexical_order_later_wins(root: Path) -> None:
    conf_d = root / "etc/odoo/conf.d"
    (conf_d / "20-tuning.conf").write_text("[options]\nworkers = 5\ndb_maxconn = 16\n")
    (conf_d / "90-local.conf").write_text("[options]\nworkers = 3\n[queue_job]\nchannels = root:2\n")
    (conf_d / "README").write_text("not a .conf file, ignored\n")
    assert main.assemble(make_host(root, FakeRunner(root))) == 0
    text = read(root, "etc/odoo/odoo.conf")
    parsed = odoo_conf.read_dropin(root / "etc/odoo/odoo.conf")
    assert parsed["options"]["workers"] == "3" and parsed["options"]["db_maxconn"] == "16"
    assert parsed["options"]["without_demo"] == "all" and parsed["queue_job"]["channels"] == "root:2"
    assert text.count("workers =") == 1 and "not a .conf" not in text
    assert mode(root / "etc/odoo/odoo.conf") == 0o640

    (conf_d / "50-broken.conf").write_text("[options]\nthis line is broken\n")
    assert main.assemble(make_host(root, FakeRunner(root))) == 1
    assert read(root, "etc/odoo/odoo.conf") == text  # the previous file stays in place


def test_banner_states() -> None:
    assert "has not run yet" in status.banner_line(None)
    running = {"state": "running", "steps": [{"name": "database"}], "problems": []}
    assert status.banner_line(running) == (
        "Odoo image: first boot running (step: database) — progress: /var/lib/odoo-image/firstboot.json"
    )
    done = {"state": "done", "url": "https://erp.example.com/", "problems": []}
    assert status.banner_line(done) == (
        "Odoo image: ready at https://erp.example.com/ — credentials: sudo cat /var/lib/odoo-image/credentials"
    )


def test_nginx_rejecting_the_odoo_site_keeps_the_starting_page(root: Path) -> None:
    runner = FakeRunner(root)
    runner.nginx_config_ok = False
    assert main.firstboot(make_host(root, runner)) == 1
    assert os.readlink(root / "etc/nginx/sites-enabled/odoo.conf") == "../sites-available/odoo-starting.conf"
    st = status_of(root)
    assert st["state"] == "failed" and "nginx" in st["errors"][0] and "emerg" in st["errors"][0]
    assert not (root / "var/lib/odoo-image/firstboot.done").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("domain: erp.example.com\n", "^erp$"),
        ("domain: www.example.co.uk\n", "^example$"),
        ("domain: erp.example.com\ndatabase: prod.db\n", "^prod\\.db$"),
    ],
)
def test_dbfilter(text: str, expected: str | None) -> None:
    import yaml
    from odoo_firstboot.settings import parse

    assert main.dbfilter_for(parse(yaml.safe_load(text))[0]) == expected


def test_banner_script_prints_the_line(root: Path, tmp_path: Path) -> None:
    """Run the installed motd script for real, against the package in this repository."""
    runner = FakeRunner(root)
    assert main.firstboot(make_host(root, runner)) == 0
    script = (root / "etc/update-motd.d/60-odoo-image").read_text()
    package_parent = str(Path(__file__).resolve().parents[2] / "cloud_init")
    script = script.replace('"/usr/local/lib/odoo-image"', repr(package_parent))
    script = script.replace(
        "sys.exit(print_banner())", f"sys.exit(print_banner(__import__('pathlib').Path({str(root)!r})))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == f"Odoo image: ready at https://{IP}/ — credentials: sudo cat /var/lib/odoo-image/credentials\n"


def test_host_addresses_from_ip_and_cloud_metadata(root: Path) -> None:
    from odoo_firstboot import network

    runner = FakeRunner(root)
    assert network.interface_addresses(runner) == [IP]  # loopback and link-local dropped
    data = root / "run/cloud-init/instance-data.json"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"ds": {"meta_data": {"public-ipv4": "203.0.113.7", "local-ipv4": IP}}}))
    assert network.public_addresses(data) == ["203.0.113.7"]
    host = main.Host(root=root, runner=runner)
    assert host.host_addresses() == ["203.0.113.7", IP]
    assert main.site_url(None, host.host_addresses()) == "https://203.0.113.7/"


def test_http_probe_reaches_our_webroot(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    webroot = tmp_path / "www"
    webroot.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(webroot))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert letsencrypt.http_probe(webroot, f"127.0.0.1:{server.server_port}")
        assert not list((webroot / ".well-known/acme-challenge").iterdir())  # token removed
        other = tmp_path / "elsewhere"
        other.mkdir()
        assert not letsencrypt.http_probe(other, f"127.0.0.1:{server.server_port}")  # someone else's server
    finally:
        server.shutdown()
        server.server_close()


def test_points_here_via_http_probe_when_nat_hides_the_public_ip() -> None:
    reach = letsencrypt.Reachability(
        resolve=lambda d: ["198.51.100.4"], local_addresses=lambda: [IP], http_probe=lambda d: True
    )
    ok, why = letsencrypt.points_here("erp.example.com", reach)
    assert ok and "reaches this host over HTTP" in why
    reach = letsencrypt.Reachability(
        resolve=lambda d: ["198.51.100.4"], local_addresses=lambda: [IP], http_probe=lambda d: False
    )
    ok, why = letsencrypt.points_here("erp.example.com", reach)
    assert not ok and why == f"erp.example.com resolves to 198.51.100.4, not to this host ({IP})"


def test_an_unexpected_error_in_an_attempt_still_schedules_the_retry(root: Path) -> None:
    settings(root, "domain: erp.example.com\nletsencrypt_email: ops@example.com\n")
    runner = FakeRunner(root)
    host = make_host(root, runner)

    def broken_resolver(domain: str) -> list[str]:
        raise OSError("resolver exploded")

    host.resolve = broken_resolver
    assert main.firstboot(host) == 0
    assert "odoo-certbot-retry.timer" in runner.active
    state = json.loads(read(root, "var/lib/odoo-image/certbot-retry.json"))
    assert state["attempts"] == 1 and "resolver exploded" in state["last_error"]
