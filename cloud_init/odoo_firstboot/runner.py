"""External commands behind a small interface, so tests can fake the ones that are not the point.

Secrets never go on a command line (visible in /proc/*/cmdline): callers pass them
through `input_text` (stdin) or a 0600/0640 file.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("odoo-firstboot")


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self) -> str:
        """Last non-empty line of stderr (else stdout): what a one-line error should quote."""
        for text in (self.stderr, self.stdout):
            lines = [line for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return ""


class CommandFailed(Exception):
    def __init__(self, result: Completed, reason: str = "") -> None:
        self.result = result
        why = reason or f"exited {result.returncode}"
        tail = result.tail()
        super().__init__(f"`{shlex.join(result.argv)}` {why}" + (f": {tail}" if tail else ""))


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input_text: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Completed: ...


class SubprocessRunner:
    """The real thing: no shell, output captured, C locale so we can parse messages."""

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
        log.debug("run: %s", shlex.join(args))
        full_env = {**os.environ, "LC_ALL": "C.UTF-8", **(env or {})}
        try:
            proc = subprocess.run(
                args,
                input=input_text,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                # stdin must not be the console when nothing is piped: odoo-bin shell
                # would otherwise wait for an interactive session.
                stdin=None if input_text is not None else subprocess.DEVNULL,
                check=False,  # CommandFailed below carries the output and names the command
            )
        except FileNotFoundError:
            result = Completed(args, 127, "", f"{args[0]}: command not found")
            if check:
                raise CommandFailed(result, "could not run (not installed)") from None
            return result
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            result = Completed(args, 124, out, f"timed out after {timeout:.0f} s")
            if check:
                raise CommandFailed(result, f"timed out after {timeout:.0f} s") from None
            return result
        result = Completed(args, proc.returncode, proc.stdout or "", proc.stderr or "")
        if check and not result.ok:
            raise CommandFailed(result)
        return result
