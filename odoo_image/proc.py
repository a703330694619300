"""Running external commands with errors that name the command."""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from .errors import PipelineError

# A child must not outlive a pipeline that is killed outright (SIGKILL, a dead parent):
# setpriv sets PR_SET_PDEATHSIG, then execs the command. Packer and QEMU both clean up on TERM.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM", "--")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every `finally` cleanup runs:
    scratch directories, VMs, containers, network links."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float) -> None:
    """SIGTERM, `grace` seconds to clean up and exit, then SIGKILL; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
