"""Entry points: `firstboot` (once per instance), `tune` (every boot), `certbot_retry`, `assemble`.

First boot, in order (each step timed in firstboot.json):
  settings → secrets → odoo conf.d → tuning → tls (self-signed) → nginx (includes, switch
  from the baked "starting" site to the Odoo site, which answers 503 "starting" until Odoo
  is up) → postgresql (role password) → letsencrypt (one attempt, else retry timer) →
  odoo.conf → database (optional) → finish (done marker, queue odoo.service).
Odoo is started last, after the database exists, so nobody ever reaches a half-created
database or Odoo's database manager; odoo.service also carries
ConditionPathExists=/var/lib/odoo-image/firstboot.done.

Everything outside this process is reached through `Host`, so tests run the whole flow
in a temporary root with a fake command runner.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import database, letsencrypt, network, nginx, odoo_conf, paths, postgres, secrets, tls, tuning
from .fsutil import ensure_dir, lookup_gid, write_atomic
from .paths import Layout
from .runner import Runner, SubprocessRunner
from .settings import Settings
from .settings import load as load_settings
from .status import Status, install_banner, print_banner
from .systemd import Systemd

log = logging.getLogger("odoo-firstboot")


@dataclass
class Host:
    """The outside world, injectable: filesystem root, commands, clock, network facts."""

    root: Path = Path("/")
    runner: Runner = field(default_factory=SubprocessRunner)
    gid_of: Callable[[str], int | None] = lookup_gid
    machine: Callable[[], tuning.Machine] | None = None
    addresses: Callable[[], list[str]] | None = None
    resolve: Callable[[str], list[str]] = network.resolve
    http_probe: Callable[[str], bool] | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.SystemRandom)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def systemd(self) -> Systemd:
        return Systemd(self.runner)

    def read_machine(self) -> tuning.Machine:
        if self.machine is not None:
            return self.machine()
        return tuning.read_machine(self.layout.at(paths.PROC_MEMINFO))

    def host_addresses(self) -> list[str]:
        """Public (cloud metadata) addresses first, then the interfaces' addresses."""
        if self.addresses is not None:
            return self.addresses()
        found = network.public_addresses(self.layout.at(paths.CLOUD_INSTANCE_DATA))
        found += [a for a in network.interface_addresses(self.runner) if a not in found]
        return found

    def letsencrypt_deps(self) -> letsencrypt.Deps:
        probe = self.http_probe or (lambda domain: letsencrypt.http_probe(self.layout.at(paths.ACME_WEBROOT), domain))
        reach = letsencrypt.Reachability(resolve=self.resolve, local_addresses=self.host_addresses, http_probe=probe)
        return letsencrypt.Deps(self.layout, self.runner, self.systemd, reach, self.clock, self.rng)


def site_url(domain: str | None, addresses: list[str]) -> str:
    if domain:
        return f"https://{domain}/"
    ipv4 = [a for a in addresses if ":" not in a]
    if ipv4:
        return f"https://{ipv4[0]}/"
    if addresses:
        return f"https://[{addresses[0]}]/"
    return "https://<this host's address>/"


def render_secrets_conf(s: secrets.Secrets) -> str:
    return (
        "; Written by odoo-firstboot from /var/lib/odoo-image/secrets.json (0640 root:odoo).\n"
        "; admin_passwd is the pbkdf2-sha512 hash of the master password; the clear value is\n"
        "; in /var/lib/odoo-image/credentials (root only).\n"
        "[options]\n"
        f"db_password = {s.db_password}\n"
        f"admin_passwd = {s.master_password_hash}\n"
    )


def dbfilter_for(settings: Settings) -> str | None:
    """Only the requested database; else, with a domain, only the database named after its
    first label ("erp" for erp.example.com, www. skipped) — what Odoo's `%d` would pick, but
    fixed, so a request by IP address or another Host header cannot select another one."""
    if settings.database:
        return f"^{re.escape(settings.database)}$"
    if settings.domain:
        first, _, rest = settings.domain.partition(".")
        if first == "www" and "." in rest:
            first = rest.partition(".")[0]
        return f"^{re.escape(first)}$"
    return None


def render_site_conf(settings: Settings) -> str:
    lines = [
        "; Written by odoo-firstboot from /etc/odoo-image/settings.yaml (domain, database).",
        "[options]",
    ]
    dbfilter = dbfilter_for(settings)
    if dbfilter:
        lines.append(f"dbfilter = {dbfilter}")
    return "\n".join(lines) + "\n"


def apply_tuning(host: Host, settings: Settings, report: Callable[[str], None]) -> tuple[tuning.Tuning, bool, bool]:
    """Compute and write both tuning drop-ins; returns (tuning, pg_changed, odoo_changed)."""
    layout = host.layout
    machine = host.read_machine()
    result = tuning.compute(machine.ram_bytes, machine.cpus, settings.tuning)
    for note in result.notes:
        report(note)
    log.info("tuning: %s", tuning.summary(result))
    major = postgres.detect_major(layout)
    pg_changed = False
    if major is None:
        report(f"tuning: no PostgreSQL cluster under {paths.PG_ETC}/<major>/main; PostgreSQL tuning not written")
    else:
        _, pg_changed = postgres.write_tuning(layout, major, tuning.render_postgresql(result))
    ensure_dir(layout.at(paths.ODOO_CONF_D), 0o755)
    odoo_changed = write_atomic(layout.at(paths.TUNING_CONF), tuning.render_odoo(result), mode=0o644)
    return result, pg_changed, odoo_changed


def _odoo_gid(host: Host) -> int:
    gid = host.gid_of(paths.ODOO_GROUP)
    if gid is None:
        raise RuntimeError(f"group {paths.ODOO_GROUP!r} does not exist (provisioning creates the odoo user)")
    return gid


def _run_steps(host: Host, status: Status) -> None:
    layout, runner, systemd = host.layout, host.runner, host.systemd

    with status.step("settings") as st:
        settings, problems = load_settings(layout.at(paths.SETTINGS))
        for line in problems:
            status.problem(line)
        st.detail = f"domain={settings.domain or '-'} database={settings.database or '-'}"

    with status.step("secrets") as st:
        want_admin = bool(settings.database) and settings.generate_admin_password
        sec, created = secrets.ensure(layout.at(paths.SECRETS), want_admin_password=want_admin)
        addresses = host.host_addresses()
        status.url = site_url(settings.domain, addresses)
        secrets.write_credentials(
            layout.at(paths.CREDENTIALS),
            secrets.render_credentials(
                sec,
                url=status.url,
                admin_login=settings.admin_login,
                database=settings.database,
                admin_password_from_settings=not settings.generate_admin_password,
            ),
        )
        st.detail = "generated" if created else "kept the existing secrets"

    with status.step("odoo-conf.d"):
        gid = _odoo_gid(host)
        ensure_dir(layout.at(paths.ODOO_CONF_D), 0o755)
        write_atomic(layout.at(paths.SECRETS_CONF), render_secrets_conf(sec), mode=0o640, uid=0, gid=gid)
        write_atomic(layout.at(paths.SITE_CONF), render_site_conf(settings), mode=0o644)

    with status.step("tuning") as st:
        result, pg_changed, _ = apply_tuning(host, settings, status.problem)
        st.detail = tuning.summary(result)

    with status.step("tls") as st:
        names = tls.names_for(settings.domain, addresses)
        made = tls.ensure_self_signed(layout, names, runner)
        keep_le = (
            settings.domain is not None
            and tls.current_kind(layout) == "letsencrypt"
            and tls.letsencrypt_ready(layout, settings.domain)
        )
        if not keep_le:
            tls.link_self_signed(layout)
        st.detail = (
            "Let's Encrypt (kept)" if keep_le else f"self-signed for {names.san()}" + ("" if made else " (kept)")
        )

    with status.step("nginx") as st:
        nginx.write_includes(layout, domain=settings.domain, hsts=tls.current_kind(layout) == "letsencrypt")
        nginx.enable_odoo_site(layout, runner, systemd)
        st.detail = f"Odoo site enabled for {settings.domain or 'any host name'}"

    with status.step("postgresql") as st:
        pg = postgres.Postgres(runner, host.sleep)
        if pg_changed and systemd.is_active(paths.UNIT_POSTGRESQL):
            # odoo-tune normally wrote the same file before PostgreSQL started; it differs
            # only when first boot is re-run with changed settings.
            systemd.restart(paths.UNIT_POSTGRESQL)
        pg.wait_ready()
        role_created = pg.set_role_password(paths.ODOO_DB_ROLE, sec.db_password)
        st.detail = f"role {paths.ODOO_DB_ROLE} " + ("created" if role_created else "password set")

    with status.step("letsencrypt") as st:
        if not (settings.domain and settings.letsencrypt_email):
            # The image enables the retry timer; with nothing to retry, switch it off here
            # rather than have it wake up every 15 minutes for ever.
            systemd.disable(paths.UNIT_CERTBOT_RETRY_TIMER, now=True)
            st.skip("no domain and e-mail in settings: self-signed certificate")
        else:
            try:
                outcome = letsencrypt.run_once(host.letsencrypt_deps(), settings.domain, settings.letsencrypt_email)
            except Exception as exc:  # noqa: BLE001 - a certificate problem must never stop the server
                outcome = letsencrypt.Outcome(False, f"{type(exc).__name__}: {exc}")
            st.detail = outcome.message
            if outcome.obtained:
                renewal = letsencrypt.ensure_renewal(systemd)
                if renewal:
                    status.problem(renewal)
            else:
                status.problem(
                    f"letsencrypt: {outcome.message}; serving the self-signed certificate, "
                    f"{paths.UNIT_CERTBOT_RETRY_TIMER} retries with backoff"
                )

    with status.step("odoo.conf"):
        odoo_conf.assemble(layout.at(paths.ODOO_CONF_D), layout.at(paths.ODOO_CONF), gid=gid)

    with status.step("database") as st:
        if not settings.database:
            st.skip("no database requested")
        else:
            admin_password = settings.admin_password or sec.admin_password
            if not admin_password:  # secrets.ensure generates it whenever a database is requested
                raise RuntimeError("no admin password available")
            request = database.CreateRequest(
                name=settings.database,
                modules=settings.modules,
                demo=settings.demo,
                admin_login=settings.admin_login,
                admin_password=admin_password,
                language=settings.language,
                country=settings.country,
                database_secret=sec.database_secret,
            )
            created_db = database.ensure_database(
                layout, runner, postgres.Postgres(runner, host.sleep), request, gid=gid
            )
            for line in created_db.problems:
                status.problem(line)
            st.detail = created_db.message

    with status.step("finish"):
        marker = {"finished_at": host.clock(), "url": status.url}
        instance_id = layout.at(paths.CLOUD_INSTANCE_ID)
        if instance_id.is_file():
            marker["instance_id"] = instance_id.read_text().strip()
        write_atomic(layout.at(paths.DONE), json.dumps(marker) + "\n", mode=0o644)
        # --no-block: odoo.service is ordered after odoo-firstboot.service, a blocking
        # start from inside it would wait for ourselves.
        systemd.start(paths.UNIT_ODOO, no_block=True)


def firstboot(host: Host, *, force: bool = False) -> int:
    """Run the finaliser unless it already completed on this instance (or `force`)."""
    layout = host.layout
    if layout.at(paths.DONE).exists() and not force:
        log.info("first boot already done (%s exists); nothing to do", paths.DONE)
        return 0
    ensure_dir(layout.at(paths.STATE_DIR), 0o755)
    status = Status(layout.at(paths.STATUS), clock=host.clock)
    status.begin()
    try:
        install_banner(host.root)
    except OSError as exc:
        status.problem(f"banner: could not install {paths.MOTD_SCRIPT}: {exc}")
    try:
        _run_steps(host, status)
    except Exception as exc:  # noqa: BLE001 - recorded, not swallowed: exit 1 fails the unit visibly
        if not status.errors:
            status.errors.append(f"{type(exc).__name__}: {exc}")
        status.finish("failed")
        log.error("first boot failed: %s (status: %s)", exc, paths.STATUS)
        return 1
    status.finish("done")
    log.info("first boot done: %s (credentials: %s)", status.url, paths.CREDENTIALS)
    return 0


def tune(host: Host, *, restart: bool = False) -> int:
    """Every boot: size to the machine, rewrite the drop-ins, reassemble odoo.conf."""
    layout, systemd = host.layout, host.systemd
    try:
        settings, problems = load_settings(layout.at(paths.SETTINGS))
        for line in problems:
            log.warning("%s", line)
        _, pg_changed, _ = apply_tuning(host, settings, lambda line: log.warning("%s", line))
        conf_changed = odoo_conf.assemble(
            layout.at(paths.ODOO_CONF_D), layout.at(paths.ODOO_CONF), gid=host.gid_of(paths.ODOO_GROUP)
        )
    except Exception as exc:  # noqa: BLE001 - one clear line, exit 1 fails the unit
        log.error("tune failed: %s", exc)
        return 1
    for unit, changed in ((paths.UNIT_POSTGRESQL, pg_changed), (paths.UNIT_ODOO, conf_changed)):
        # At boot odoo-tune runs before both services, so neither is active here.
        if changed and systemd.is_active(unit):
            if restart:
                systemd.restart(unit)
            else:
                log.info("%s: configuration changed; restart it to apply (or run odoo-tune --restart)", unit)
    return 0


def certbot_retry(host: Host) -> int:
    settings, _ = load_settings(host.layout.at(paths.SETTINGS))
    try:
        outcome = letsencrypt.retry_tick(host.letsencrypt_deps(), settings.domain, settings.letsencrypt_email)
    except Exception as exc:  # noqa: BLE001 - keep the timer alive; the next tick tries again
        log.error("certbot retry failed: %s", exc)
        return 0
    if outcome is not None:
        log.info("certbot retry: %s", outcome.message)
        if outcome.obtained:
            problem = letsencrypt.ensure_renewal(host.systemd)
            if problem:
                log.warning("%s", problem)
    return 0


def assemble(host: Host) -> int:
    layout = host.layout
    try:
        changed = odoo_conf.assemble(
            layout.at(paths.ODOO_CONF_D), layout.at(paths.ODOO_CONF), gid=host.gid_of(paths.ODOO_GROUP)
        )
    except (odoo_conf.ConfError, OSError) as exc:
        log.error("%s", exc)
        return 1
    log.info("%s %s", paths.ODOO_CONF, "updated (restart odoo to apply)" if changed else "unchanged")
    return 0


def _setup_logging(prog: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{prog}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")


def firstboot_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odoo-firstboot", description="First-boot finaliser of the Odoo image.")
    parser.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "certbot-retry", "banner"],
        help="run (default): finalise once per instance; certbot-retry: one timer tick; banner: print the login line",
    )
    parser.add_argument("--force", action="store_true", help="run again although firstboot.done exists (idempotent)")
    _common(parser)
    args = parser.parse_args(argv)
    _setup_logging(parser.prog, args.verbose)
    host = Host(root=args.root)
    if args.action == "banner":
        return print_banner(args.root)
    if args.action == "certbot-retry":
        return certbot_retry(host)
    return firstboot(host, force=args.force)


def tune_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odoo-tune", description="Size PostgreSQL and Odoo to this machine.")
    parser.add_argument("--restart", action="store_true", help="restart PostgreSQL/Odoo if their configuration changed")
    _common(parser)
    args = parser.parse_args(argv)
    _setup_logging(parser.prog, args.verbose)
    return tune(Host(root=args.root), restart=args.restart)


def assemble_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="odoo-config-assemble", description="Merge /etc/odoo/conf.d/*.conf into /etc/odoo/odoo.conf."
    )
    _common(parser)
    args = parser.parse_args(argv)
    _setup_logging(parser.prog, args.verbose)
    return assemble(Host(root=args.root))
