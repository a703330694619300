"""A pipeline that is stopped (SIGTERM, as CI timeouts and `kill` do) or killed outright
(SIGKILL) must not leave Packer, and so Packer's VM, running. Real processes: the pipeline's
`packer.build` in a child Python, and a stand-in `packer` on PATH that records the signal it
gets and the pid it runs as (Packer itself cancels its build and stops its VM on SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from odoo_image.paths import REPO_ROOT

FAKE_PACKER = """\
#!/usr/bin/env bash
set -euo pipefail
echo $$ > "$STATE/pid"
trap 'echo cancelled > "$STATE/signal"; exit 1' TERM
echo "==> qemu.odoo: Starting VM"
while true; do sleep 0.1; done
"""

PIPELINE = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from odoo_image import packer
    from odoo_image.proc import sigterm_as_interrupt
    with sigterm_as_interrupt():
        try:
            packer.build(Path(sys.argv[1]), only="qemu", variables={}, version=(1, 6, 6),
                         log_path=Path(sys.argv[1]) / "packer.log")
        except KeyboardInterrupt:
            Path(sys.argv[1], "unwound").write_text("yes")
            raise
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def pipeline(tmp_path: Path) -> subprocess.Popen[bytes]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "packer"
    fake.write_text(FAKE_PACKER)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(tmp_path),
           "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", PIPELINE, str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait(lambda: (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text().strip()), \
        "the stand-in packer never started"
    yield child
    if child.poll() is None:
        child.kill()
        child.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_pipeline_cancels_packer(pipeline: subprocess.Popen[bytes], tmp_path: Path, sig: int) -> None:
    packer_pid = int((tmp_path / "pid").read_text())
    pipeline.send_signal(sig)
    pipeline.wait(timeout=60)
    assert _wait(lambda: (tmp_path / "signal").is_file()), "packer was not told to cancel"
    assert (tmp_path / "signal").read_text().strip() == "cancelled"
    assert _wait(lambda: not _alive(packer_pid)), "packer outlived the pipeline"
    if sig == signal.SIGTERM:
        # SIGTERM unwinds like Ctrl-C: the pipeline's own cleanup (finally blocks) runs.
        assert (tmp_path / "unwound").read_text() == "yes"
