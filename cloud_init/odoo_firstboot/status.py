"""Machine-readable first-boot status and the one-line login banner built from it.

/var/lib/odoo-image/firstboot.json (0644, no secrets) is rewritten after every step, so
`cat` during a long database creation shows where it is:

    {"state": "running|done|failed", "started_at": ..., "finished_at": ...,
     "steps": [{"name": "tls", "state": "ok|failed|skipped", "seconds": 0.4, "detail": ...}],
     "problems": ["settings.domain: 'exa mple' is not a valid DNS name"],
     "errors": ["database: ..."], "url": "https://...", "credentials": "/var/lib/odoo-image/credentials"}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import paths
from .fsutil import ensure_dir, write_atomic

log = logging.getLogger("odoo-firstboot")


def _iso(ts: float) -> str:
    # timezone.utc, not datetime.UTC: the image's python3 is 3.10 on jammy.
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017


@dataclass
class StepHandle:
    """Yielded by Status.step so the step can attach a one-line detail."""

    detail: str = ""
    skipped: bool = False

    def skip(self, reason: str) -> None:
        self.skipped = True
        self.detail = reason


@dataclass
class Status:
    path: Path
    clock: Callable[[], float] = time.time
    state: str = "running"
    started_at: float = 0.0
    finished_at: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    url: str | None = None

    def begin(self) -> None:
        self.state, self.started_at = "running", self.clock()
        self.save()

    @contextmanager
    def step(self, name: str) -> Iterator[StepHandle]:
        """Time a step and record it; an exception marks it failed and propagates."""
        handle = StepHandle()
        entry: dict[str, Any] = {"name": name, "state": "running", "seconds": 0.0}
        self.steps.append(entry)
        self.save()
        start = time.monotonic()
        log.info("==> %s", name)
        try:
            yield handle
        except Exception as exc:
            entry.update(state="failed", seconds=round(time.monotonic() - start, 2), detail=str(exc))
            self.errors.append(f"{name}: {exc}")
            log.error("<== %s FAILED: %s", name, exc)
            self.save()
            raise
        entry.update(
            state="skipped" if handle.skipped else "ok",
            seconds=round(time.monotonic() - start, 2),
        )
        if handle.detail:
            entry["detail"] = handle.detail
        log.info(
            "<== %s: %s in %.1f s%s",
            name,
            entry["state"],
            entry["seconds"],
            f" ({handle.detail})" if handle.detail else "",
        )
        self.save()

    def problem(self, line: str) -> None:
        """A setting or condition the operator should know about that did not stop first boot."""
        if line not in self.problems:
            self.problems.append(line)
            log.warning("%s", line)
            self.save()

    def finish(self, state: str) -> None:
        self.state, self.finished_at = state, self.clock()
        self.save()

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "started_at": _iso(self.started_at) if self.started_at else None,
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
            "seconds": round((self.finished_at or self.clock()) - self.started_at, 1) if self.started_at else None,
            "steps": self.steps,
            "problems": self.problems,
            "errors": self.errors,
            "url": self.url,
            "credentials": str(paths.CREDENTIALS),
        }

    def save(self) -> None:
        ensure_dir(self.path.parent, 0o755)
        write_atomic(self.path, json.dumps(self.as_dict(), indent=2) + "\n", mode=0o644)


# pam_motd runs /etc/update-motd.d/* as root at each login (Ubuntu and Debian alike).
BANNER_SCRIPT = """#!/usr/bin/python3 -I
# Written by odoo-firstboot: one login-banner line from /var/lib/odoo-image/firstboot.json.
import sys

sys.path.insert(0, "/usr/local/lib/odoo-image")
try:
    from odoo_firstboot.status import print_banner
except Exception:  # a broken banner must never break a login
    sys.exit(0)
sys.exit(print_banner())
"""


def install_banner(root: Path) -> bool:
    """Install the update-motd.d script (first thing at first boot, so a login during a long
    first boot already says it is running)."""
    target = root / paths.MOTD_SCRIPT.relative_to("/")
    ensure_dir(target.parent, 0o755)
    return write_atomic(target, BANNER_SCRIPT, mode=0o755)


def read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def banner_line(data: dict[str, Any] | None) -> str:
    """One line for the login banner (update-motd.d), from the status file's content."""
    if data is None:
        return "Odoo image: first boot has not run yet (status: sudo journalctl -u odoo-firstboot)"
    state = data.get("state")
    problems = data.get("problems") or []
    extra = f", {len(problems)} setting problem(s) in {paths.STATUS}" if problems else ""
    if state == "done":
        url = data.get("url") or "https://<this host>/"
        return f"Odoo image: ready at {url} — credentials: sudo cat {paths.CREDENTIALS}{extra}"
    if state == "failed":
        errors = data.get("errors") or ["unknown error"]
        return (
            f"Odoo image: first boot FAILED ({errors[-1]}) — see {paths.STATUS} and journalctl -u odoo-firstboot{extra}"
        )
    steps = data.get("steps") or []
    current = steps[-1]["name"] if steps and isinstance(steps[-1], dict) else "starting"
    return f"Odoo image: first boot running (step: {current}) — progress: {paths.STATUS}{extra}"


def print_banner(root: Path = Path("/")) -> int:
    print(banner_line(read(root / paths.STATUS.relative_to("/"))))
    return 0
