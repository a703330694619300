"""Optional database creation with odoo-bin, run as the `odoo` user, before Odoo serves.

Three odoo-bin runs, in the order Odoo's own database manager uses:
1. `-i base` creates the database (no demo data unless `demo: true`);
2. `odoo-bin shell` sets the admin login/password, language, company country and our
   `database.secret` — the country must be set *before* apps are installed, because
   installing `account` picks the fiscal localisation from the company's country;
3. `-i a,b,c` installs all requested modules in ONE call: Odoo resolves their
   dependency graph together and installs in topological order, so the order given in
   settings cannot break anything and shared dependencies are installed once.
Any failure drops the half-made database and its filestore, so the next attempt (next
boot, or `systemctl start odoo-firstboot`) starts clean instead of skipping a broken DB.
An existing database is left alone: re-running never resets an admin password.
"""

from __future__ import annotations

import configparser
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from . import paths
from .fsutil import ensure_dir, write_atomic
from .odoo_conf import read_dropin
from .paths import Layout
from .postgres import Postgres, literal
from .runner import CommandFailed, Runner

log = logging.getLogger("odoo-firstboot")

# Creating a database with a few apps takes minutes natively, far longer under emulation.
INIT_TIMEOUT = 4 * 3600.0
RESULT_MARK = "ODOO_IMAGE_RESULT "
# For these one-shot runs: no HTTP listener (odoo.service may hold the port), no cron
# threads, and no RLIMIT_AS — limit_memory_hard is sized for request workers, while
# installing many modules in one process legitimately needs more.
ONE_SHOT_FLAGS = ("--no-http", "--workers=0", "--max-cron-threads=0", "--limit-memory-hard=0")


class DatabaseError(Exception):
    pass


@dataclass(frozen=True)
class CreateRequest:
    name: str
    modules: tuple[str, ...]
    demo: bool
    admin_login: str
    admin_password: str
    language: str
    country: str | None
    database_secret: str


@dataclass(frozen=True)
class CreateResult:
    created: bool
    message: str
    problems: tuple[str, ...] = ()


def odoo_argv(subcommand: str | None, conf: PurePosixPath, *args: str) -> list[str]:
    """odoo-bin with the venv's python, as the odoo user (files it creates belong to odoo)."""
    argv = ["runuser", "-u", paths.ODOO_USER, "--", str(paths.ODOO_PYTHON), str(paths.ODOO_BIN)]
    if subcommand:
        argv.append(subcommand)
    return [*argv, "-c", str(conf), *args]


def install_argv(conf: PurePosixPath, name: str, modules: tuple[str, ...], demo: bool) -> list[str]:
    argv = odoo_argv(None, conf, "-d", name, "-i", ",".join(modules), "--stop-after-init", *ONE_SHOT_FLAGS)
    if not demo:
        argv.append("--without-demo=all")
    return argv


def shell_argv(conf: PurePosixPath, name: str) -> list[str]:
    return odoo_argv("shell", conf, "-d", name, *ONE_SHOT_FLAGS)


def shell_script(req: CreateRequest) -> str:
    """Python fed to `odoo-bin shell` on stdin (values as literals: nothing on argv)."""
    return f"""
import json
login, password = {req.admin_login!r}, {req.admin_password!r}
lang, country, secret = {req.language!r}, {req.country!r}, {req.database_secret!r}
result = {{"lang": True, "country": True}}
values = {{"login": login, "password": password}}
if "@" in login:
    values["email"] = login
if lang and lang != "en_US":
    if env["res.lang"]._activate_lang(lang):
        env["ir.module.module"].search([("state", "=", "installed")])._update_translations(lang)
        values["lang"] = lang
    else:
        result["lang"] = False
env.ref("base.user_admin").write(values)
if country:
    found = env["res.country"].search([("code", "=", country)], limit=1)
    if found:
        company_values = {{"country_id": found.id}}
        if found.currency_id:
            company_values["currency_id"] = found.currency_id.id
        env.company.write(company_values)
    else:
        result["country"] = False
env["ir.config_parameter"].sudo().set_param("database.secret", secret)
env.cr.commit()
print({RESULT_MARK!r} + json.dumps(result))
"""


def _parse_result(stdout: str) -> dict[str, object] | None:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            try:
                data = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _demo_conf(layout: Layout, gid: int | None) -> PurePosixPath:
    """odoo.conf with `without_demo = False`: the image bakes `without_demo = all`, which
    leaving out --without-demo on the command line would not undo."""
    parser = read_dropin(layout.at(paths.ODOO_CONF))
    if not parser.has_section("options"):
        parser.add_section("options")
    parser.set("options", "without_demo", "False")
    target = paths.RUN_DIR / "odoo-create-db.conf"
    ensure_dir(layout.at(paths.RUN_DIR), 0o755)
    lines = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in parser.items(section, raw=True))
    write_atomic(layout.at(target), "\n".join(lines) + "\n", mode=0o640, uid=0, gid=-1 if gid is None else gid)
    return target


def _drop(layout: Layout, pg: Postgres, name: str) -> None:
    try:
        pg.drop_database(name)
    except CommandFailed as exc:
        log.error("could not drop the half-created database %s: %s", name, exc)
    shutil.rmtree(layout.at(paths.ODOO_DATA_DIR / "filestore" / name), ignore_errors=True)


def module_states(pg: Postgres, name: str, modules: tuple[str, ...]) -> dict[str, str]:
    if not modules:
        return {}
    wanted = ", ".join(literal(m) for m in modules)
    out = pg.psql(f"SELECT name, state FROM ir_module_module WHERE name IN ({wanted});", database=name).stdout
    states: dict[str, str] = {}
    for line in out.splitlines():
        if "|" in line:
            module, state = line.split("|", 1)
            states[module.strip()] = state.strip()
    return states


def ensure_database(
    layout: Layout,
    runner: Runner,
    pg: Postgres,
    req: CreateRequest,
    *,
    gid: int | None,
    clock: Callable[[], float] = time.monotonic,
) -> CreateResult:
    if pg.database_exists(req.name):
        return CreateResult(False, f"database {req.name} already exists; left as is")
    conf = _demo_conf(layout, gid) if req.demo else paths.ODOO_CONF
    problems: list[str] = []
    try:
        start = clock()
        log.info(
            "database %s: creating with base%s (Odoo's log: %s)",
            req.name,
            " and demo data" if req.demo else "",
            paths.ODOO_LOG,
        )
        runner.run(install_argv(conf, req.name, ("base",), req.demo), timeout=INIT_TIMEOUT)
        log.info(
            "database %s: base installed in %.0f s; setting admin user, language, country", req.name, clock() - start
        )
        shell = runner.run(shell_argv(conf, req.name), input_text=shell_script(req), timeout=1800)
        result = _parse_result(shell.stdout)
        if result is None:
            raise DatabaseError(
                f"database {req.name}: `odoo-bin shell` did not confirm the admin user update: {shell.tail()}"
            )
        if result.get("lang") is False:
            problems.append(f"settings.language: {req.language!r} is not a language Odoo knows; kept en_US")
        if result.get("country") is False:
            problems.append(f"settings.country: {req.country!r} is not a country Odoo knows; company country not set")
        if req.modules:
            log.info(
                "database %s: installing %s (one call, Odoo orders them by dependency)",
                req.name,
                ", ".join(req.modules),
            )
            step = clock()
            runner.run(install_argv(conf, req.name, req.modules, req.demo), timeout=INIT_TIMEOUT)
            log.info("database %s: modules installed in %.0f s", req.name, clock() - step)
            states = module_states(pg, req.name, req.modules)
            for module in req.modules:
                if states.get(module) != "installed":
                    problems.append(
                        f"settings.modules: {module!r} was not installed ({states.get(module, 'not found in the addons path')})"
                    )
    except (CommandFailed, DatabaseError, configparser.Error) as exc:
        _drop(layout, pg, req.name)
        raise DatabaseError(f"creating database {req.name} failed, dropped it for a clean retry: {exc}") from None
    finally:
        if req.demo:
            layout.at(paths.RUN_DIR / "odoo-create-db.conf").unlink(missing_ok=True)
    total = clock() - start
    return CreateResult(True, f"database {req.name} created in {total:.0f} s", tuple(problems))
