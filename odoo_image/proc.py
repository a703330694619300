"""Running external commands with errors that name the command."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import PipelineError


class CommandError(PipelineError):
    def __init__(self, argv: Sequence[str], code: int, output: str = "") -> None:
        self.argv = list(argv)
        self.code = code
        self.output = output
        tail = output.strip().splitlines()[-1] if output.strip() else ""
        detail = f": {tail}" if tail else ""
        super().__init__(f"`{shlex.join(self.argv)}` exited {code}{detail}")


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell). With capture, stdout+stderr are returned merged."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            text=True,
            input=input_text,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise PipelineError(f"`{args[0]}` is not installed (needed for `{shlex.join(args)}`)") from exc
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout or "")
    return proc
