"""Run the testinfra suite (tests/image/) against one booted instance over SSH."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .paths import REPO_ROOT

SUITE = REPO_ROOT / "tests" / "image"


def run_suite(*, host: str, port: int, user: str, key: Path, env: Mapping[str, str],
              extra_args: Sequence[str] = (), junit: Path | None = None) -> int:
    """pytest tests/image --hosts=ssh://user@host:port; returns pytest's exit code."""
    ssh_config = key.with_name("ssh_config")
    # Throwaway instances: their host keys are new every boot, never worth remembering.
    ssh_config.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                          "  LogLevel ERROR\n  ConnectTimeout 20\n")
    argv = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q",
            f"--hosts=ssh://{user}@{host}:{port}", f"--ssh-identity-file={key}", f"--ssh-config={ssh_config}",
            *extra_args]
    if junit is not None:
        argv.append(f"--junitxml={junit}")
    return subprocess.run(argv, cwd=REPO_ROOT, env={**os.environ, **env}).returncode
