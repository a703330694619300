"""Assemble /etc/odoo/odoo.conf from /etc/odoo/conf.d/*.conf.

Why drop-ins: each writer owns one file (image 00, secrets 10, tuning 20, site 30,
operator 90) and never edits another's, so the per-boot tuning can rewrite its file
without touching secrets or the operator's overrides. Odoo reads a single file, so we
merge: files in lexical order, a key in a later file replaces the same key from an
earlier one (90-local.conf wins). The result is 0640 root:odoo — it holds db_password and
the master password hash — and is written atomically so a starting Odoo never reads a
half-written file.
"""

from __future__ import annotations

import configparser
from pathlib import Path

from .fsutil import write_atomic

HEADER = (
    "; Assembled by odoo-config-assemble from /etc/odoo/conf.d/*.conf (lexical order, later\n"
    "; files win). Do not edit: put overrides in /etc/odoo/conf.d/90-local.conf, then run\n"
    "; odoo-config-assemble and restart odoo.\n"
)


class ConfError(Exception):
    pass


def _parser() -> configparser.RawConfigParser:
    # Raw (no '%' interpolation) like Odoo's own reader; keep key case; tolerate a key
    # repeated inside one file (last wins, as in Odoo).
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


def read_dropin(path: Path) -> configparser.RawConfigParser:
    """Parse one drop-in; a file without a section header is taken as [options]
    (an operator writing `workers = 4` into 90-local.conf means exactly that)."""
    text = path.read_text(encoding="utf-8")
    parser = _parser()
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError:
        parser = _parser()
        try:
            parser.read_string("[options]\n" + text, source=str(path))
        except configparser.Error as exc:
            raise ConfError(f"{path}: {exc}") from None
    except configparser.Error as exc:
        raise ConfError(f"{path}: {exc}") from None
    return parser


def merge(conf_d: Path) -> dict[str, dict[str, str]]:
    """Sections → options, later files overriding earlier ones; [options] first."""
    merged: dict[str, dict[str, str]] = {"options": {}}
    for path in sorted(conf_d.glob("*.conf")):
        if not path.is_file():
            continue
        parser = read_dropin(path)
        for section in parser.sections():
            target = merged.setdefault(section, {})
            for key, value in parser.items(section, raw=True):
                target.pop(key, None)  # re-insert so the output order shows who set it last
                target[key] = value
    return merged


def render(merged: dict[str, dict[str, str]]) -> str:
    out = [HEADER]
    for section, options in merged.items():
        out.append(f"[{section}]\n")
        for key, value in options.items():
            if "\n" in value:  # multi-line values (rare) keep configparser's indentation
                value = value.replace("\n", "\n\t")
            out.append(f"{key} = {value}\n")
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def assemble(conf_d: Path, output: Path, *, gid: int | None) -> bool:
    """Write the merged config; returns True when odoo.conf changed (restart Odoo then)."""
    if not conf_d.is_dir():
        raise ConfError(f"{conf_d} does not exist")
    text = render(merge(conf_d))
    return write_atomic(output, text, mode=0o640, uid=0, gid=-1 if gid is None else gid)
