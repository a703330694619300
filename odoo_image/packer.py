"""Run Packer: version detection, init (>= 1.7 only), build with streamed, prefixed output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import PipelineError
from .proc import DIE_WITH_PARENT, terminate
from .render import PLUGINS_MIN_PACKER

CANCEL_TIMEOUT = 120.0


def build(packer_dir: Path, *, only: str, variables: Mapping[str, str], version: tuple[int, int, int],
          log_path: Path, env: Mapping[str, str] | None = None) -> None:
    """`packer build -only=<only>.odoo` streaming Packer's lines (prefixed) and keeping a log."""
    if version >= PLUGINS_MIN_PACKER:
        _run(["packer", "init", "."], packer_dir, log_path, env)
    argv = ["packer", "build", "-color=false", "-on-error=cleanup", f"-only={only}.odoo"]
    argv += [f"-var={name}={value}" for name, value in sorted(variables.items())]
    argv.append(".")
    _run(argv, packer_dir, log_path, env)


def _run(argv: Sequence[str], cwd: Path, log_path: Path, env: Mapping[str, str] | None) -> None:
    full_env = {**os.environ, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1", **(env or {})}
    tail: list[str] = []
    # Own session: Ctrl-C reaches only us, and we cancel Packer once (a second signal makes it
    # quit without cleaning up). DIE_WITH_PARENT: a pipeline killed outright still cancels it.
    with log_path.open("a") as log, subprocess.Popen(
            [*DIE_WITH_PARENT, *argv], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                sys.stderr.write(f"    packer | {line}")
                tail = (tail + [line.rstrip()])[-20:]
            code = proc.wait()
        except BaseException:
            # Interrupted: Packer cancels on SIGTERM (stops its VM, removes its output).
            terminate(proc, grace=CANCEL_TIMEOUT)
            raise
    if code != 0:
        errors = [t for t in tail if "error" in t.lower()] or tail[-3:]
        raise PipelineError(f"`{' '.join(argv[:3])}` failed (exit {code}): {errors[-1] if errors else ''} "
                            f"(full log: {log_path})")

