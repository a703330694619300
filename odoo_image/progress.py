"""Step progress with timings, and the summary table printed at the end of long work."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class StepResult:
    name: str
    seconds: float
    ok: bool


@dataclass
class Progress:
    """Prints `==> step` on entry and `<== step: 12.3 s` on exit; keeps results for a table."""

    title: str = ""
    out: TextIO = field(default_factory=lambda: sys.stderr)
    results: list[StepResult] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"==> {name}", file=self.out, flush=True)
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            took = time.monotonic() - start
            self.results.append(StepResult(name, took, ok))
            state = "done" if ok else "FAILED"
            print(f"<== {name}: {state} in {took:.1f} s", file=self.out, flush=True)

    def table(self) -> str:
        width = max([len(r.name) for r in self.results] + [4])
        lines = [f"{'step':<{width}}  {'seconds':>8}  result", f"{'-' * width}  {'-' * 8}  ------"]
        for r in self.results:
            lines.append(f"{r.name:<{width}}  {r.seconds:>8.1f}  {'ok' if r.ok else 'FAILED'}")
        total = sum(r.seconds for r in self.results)
        lines.append(f"{'total':<{width}}  {total:>8.1f}")
        return "\n".join(lines)

    def print_summary(self) -> None:
        if self.results:
            heading = f"{self.title} summary" if self.title else "summary"
            print(f"\n{heading}\n{self.table()}", file=self.out, flush=True)
