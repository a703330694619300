"""Operator settings: /etc/odoo-image/settings.yaml (written by cloud-init `write_files`).

Contract (cloud_init/settings.schema.md): every key is optional. A bad or unknown key
never stops first boot: it yields exactly one line naming the key
(`settings.domain: 'exa mple' is not a valid DNS name`), that key is ignored and its
safe default used, so the instance still comes up complete rather than half-configured
with a guessed value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

MiB = 1024 * 1024
GiB = 1024 * MiB

GENERATE = "generate"
MIN_ADMIN_PASSWORD = 8

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# Odoo's own DBNAME_PATTERN (odoo/service/db.py), plus PostgreSQL's 63-byte identifier limit.
_DBNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_MODULE = re.compile(r"^[a-z0-9_]+$")
# en_US, fr_BE, es_419, sr@latin, sr_RS@latin, ar_001 ...
_LANG = re.compile(r"^[a-z]{2,3}(_([A-Z]{2}|[0-9]{3}))?(@[a-z]+)?$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|kB|MB|GB|TB)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": MiB, "gb": GiB, "tb": 1024 * GiB}


@dataclass(frozen=True)
class TuningOverrides:
    """Operator values that win over the computed tuning (None = compute it).

    Sizes are bytes; times are seconds.
    """

    workers: int | None = None
    max_cron_threads: int | None = None
    shared_buffers: int | None = None
    effective_cache_size: int | None = None
    work_mem: int | None = None
    maintenance_work_mem: int | None = None
    max_connections: int | None = None
    db_maxconn: int | None = None
    limit_memory_soft: int | None = None
    limit_memory_hard: int | None = None
    limit_time_cpu: int | None = None
    limit_time_real: int | None = None


@dataclass(frozen=True)
class Settings:
    domain: str | None = None
    letsencrypt_email: str | None = None
    database: str | None = None
    # Handed to Odoo in ONE `-i base,a,b` call: Odoo builds the dependency graph of the
    # whole set and installs in topological order, so the order written here never
    # matters and a module is never installed before something it depends on.
    modules: tuple[str, ...] = ()
    admin_login: str = "admin"
    # None means "generate" (the default): never ship a guessable admin password.
    admin_password: str | None = None
    language: str = "en_US"
    country: str | None = None
    demo: bool = False
    tuning: TuningOverrides = field(default_factory=TuningOverrides)

    @property
    def generate_admin_password(self) -> bool:
        return self.admin_password is None


class _Invalid(Exception):
    """Raised by a validator; str() is the message after `settings.<key>: `."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def valid_dns_name(name: str) -> bool:
    """A fully qualified host name (at least two labels, non-numeric TLD), no IP literals."""
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_DNS_LABEL.match(label) for label in labels)


def parse_size(value: object) -> int:
    """'512MB' / '2GB' / '64kB' (PostgreSQL's units, any case) → bytes."""
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
            if size > 0:
                return size
    raise _Invalid(f"{_show(value)} is not a size like '512MB' or '2GB'")


def _domain(value: object) -> str:
    if isinstance(value, str):
        name = value.strip().lower().rstrip(".")
        if valid_dns_name(name):
            return name
    raise _Invalid(f"{_show(value)} is not a valid DNS name")


def _email(value: object) -> str:
    if isinstance(value, str) and _EMAIL.match(value.strip()):
        return value.strip()
    raise _Invalid(f"{_show(value)} is not a valid e-mail address")


def _database(value: object) -> str:
    if isinstance(value, str) and _DBNAME.match(value):
        return value
    raise _Invalid(
        f"{_show(value)} is not a valid database name (letters, digits, '_', '.', '-', "
        "starting with a letter or digit, at most 63 characters)"
    )


def _admin_login(value: object) -> str:
    if isinstance(value, str) and value and len(value) <= 128 and not re.search(r"\s", value):
        return value
    raise _Invalid(f"{_show(value)} is not a valid login (non-empty, no spaces, at most 128 characters)")


def _admin_password(value: object) -> str | None:
    # Never echo the value: it is a password.
    if value == GENERATE:
        return None
    if not isinstance(value, str):
        raise _Invalid(f'must be "{GENERATE}" or a quoted string, got a {type(value).__name__}')
    if len(value) < MIN_ADMIN_PASSWORD:
        raise _Invalid(
            f'must be "{GENERATE}" or at least {MIN_ADMIN_PASSWORD} characters '
            f"(got {len(value)}); a password will be generated"
        )
    return value


def _language(value: object) -> str:
    if isinstance(value, str) and _LANG.match(value):
        return value
    raise _Invalid(f"{_show(value)} is not a language code like 'en_US' or 'fr_FR'")


def _country(value: object) -> str:
    if isinstance(value, str) and _COUNTRY.match(value):
        return value.upper()
    raise _Invalid(f"{_show(value)} is not a two-letter ISO 3166 country code like 'BE' or 'US'")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"{_show(value)} is not true or false")


def _int_range(low: int, high: int, why: str = "") -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{_show(value)} is not an integer")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range ({low}..{high}){why}")
        return value

    return check


def _pg_size(low: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            # A bare number means different units for different PostgreSQL settings
            # (8 kB pages for shared_buffers, kB for work_mem): refuse to guess.
            raise _Invalid(f"{value} needs a unit, e.g. '{value}MB'")
        size = parse_size(value)
        if size < low:
            raise _Invalid(f"{_show(value)} is below the minimum of {low // 1024}kB")
        return size

    return check


def _odoo_memory(value: object) -> int:
    # odoo.conf takes bytes, so a bare integer is bytes here (Odoo's own unit).
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        size = parse_size(value)
    if size < 128 * MiB:
        raise _Invalid(f"{_show(value)} is below the minimum of 128MB (Odoo workers would die at start)")
    return size


def _modules(value: object) -> tuple[tuple[str, ...], list[str]]:
    """Returns the valid module names and one problem per bad entry (kept apart: one bad
    name should not throw away the rest of the list)."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise _Invalid(f"{_show(value)} is not a list of module names")
    names: list[str] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, str) and _MODULE.match(item):
            if item != "base" and item not in names:  # base is always installed first
                names.append(item)
        else:
            problems.append(
                f"settings.modules[{index}]: {_show(item)} is not a module name (lowercase letters, digits and '_')"
            )
    return tuple(names), problems


_WORKERS_WHY = "; the NGINX site sends /websocket to the gevent process, which needs workers >= 1"

_SCALARS: dict[str, Callable[[object], Any]] = {
    "domain": _domain,
    "letsencrypt_email": _email,
    "database": _database,
    "admin_login": _admin_login,
    "admin_password": _admin_password,
    "language": _language,
    "country": _country,
    "demo": _bool,
}

_TUNING: dict[str, Callable[[object], int]] = {
    "workers": _int_range(1, 512, _WORKERS_WHY),
    "max_cron_threads": _int_range(0, 64),
    "shared_buffers": _pg_size(128 * 1024),
    "effective_cache_size": _pg_size(8 * 1024),
    "work_mem": _pg_size(64 * 1024),
    "maintenance_work_mem": _pg_size(1024 * 1024),
    "max_connections": _int_range(10, 10000),
    "db_maxconn": _int_range(2, 1000),
    "limit_memory_soft": _odoo_memory,
    "limit_memory_hard": _odoo_memory,
    "limit_time_cpu": _int_range(1, 86400),
    "limit_time_real": _int_range(1, 86400),
}

KNOWN_KEYS: tuple[str, ...] = (*_SCALARS, "modules", *_TUNING)


def parse(data: object, source: str = "settings.yaml") -> tuple[Settings, list[str]]:
    """Validate already-loaded YAML data. Never raises: returns settings + problem lines."""
    if data is None:
        return Settings(), []
    if not isinstance(data, Mapping):
        kind = type(data).__name__
        return Settings(), [f"settings: {source} must be a mapping of `key: value`, got {kind}; all defaults used"]
    problems: list[str] = []
    values: dict[str, Any] = {}
    tuning: dict[str, int] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        try:
            if key in _SCALARS:
                values[key] = _SCALARS[key](value)
            elif key in _TUNING:
                tuning[key] = _TUNING[key](value)
            elif key == "modules":
                values["modules"], module_problems = _modules(value)
                problems.extend(module_problems)
            else:
                hint = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.75)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(f"settings.{key}: unknown setting, ignored{suggestion}")
        except _Invalid as exc:
            problems.append(f"settings.{key}: {exc}")

    settings = Settings(**values, tuning=TuningOverrides(**tuning))
    problems.extend(_cross_checks(settings))
    if not settings.database and settings.modules:
        settings = replace(settings, modules=())
    if not settings.domain and settings.letsencrypt_email:
        settings = replace(settings, letsencrypt_email=None)
    return settings, problems


def _cross_checks(s: Settings) -> list[str]:
    problems = []
    if s.modules and not s.database:
        problems.append("settings.modules: ignored because settings.database is not set")
    if s.letsencrypt_email and not s.domain:
        problems.append("settings.letsencrypt_email: ignored because settings.domain is not set")
    if s.domain and not s.letsencrypt_email:
        problems.append(
            f"settings.letsencrypt_email: not set, so no Let's Encrypt certificate is requested "
            f"for {s.domain}; the self-signed certificate stays"
        )
    return problems


def load(path: Path) -> tuple[Settings, list[str]]:
    """Read and validate the settings file. A missing file is normal (no user-data)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings(), []
    except (OSError, UnicodeDecodeError) as exc:
        return Settings(), [f"settings: cannot read {path}: {exc}; all defaults used"]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        what = getattr(exc, "problem", None) or type(exc).__name__
        return Settings(), [f"settings: {path.name} is not valid YAML ({what}{where}); all defaults used"]
    return parse(data, path.name)
