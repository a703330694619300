"""Error types the CLI turns into one-line messages and exit codes."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the operator can act on; str() is one line. Exit code 1."""

    exit_code = 1


class SpecError(PipelineError):
    """The catalogue (images.yaml) is invalid. Exit code 2, nothing written."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
