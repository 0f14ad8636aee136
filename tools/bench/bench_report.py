"""What every benchmark script hands to tools/bench/bench_all.py: its `Benchmark` description,
the `Goal`s it checks and the markdown table its rendering uses.

Each ``bench_*.py`` (and ``fid_quality.py``) owns its goal constants, its rendering and its goal
checks, and exposes them as a module-level ``BENCHMARK``; bench_all.py only runs the scripts and
assembles their sections.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Goal:
    """One goal checked against a number measured in this run."""

    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "not measured"}[self.passed]


def json_option(path: Path) -> list[str]:
    """The usual hand-over: the script writes its measurements as JSON to `--json PATH`."""
    return ["--json", str(path)]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script as bench_all.py runs and reports it.

    `render` turns the script's JSON into the section's text, `goals` into the goals it checks;
    `result_args` are the arguments that make the script write that JSON to a given path.
    """

    script: Path
    title: str
    goal: str  # in words, for the goals table when nothing was measured
    render: Callable[[dict], str]
    goals: Callable[[dict], list[Goal]]
    result_args: Callable[[Path], list[str]] = json_option
    env: dict[str, str] = field(default_factory=dict)  # what its docstring runs it with
    raw_output: bool = True  # False when the rendered text is already the script's output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def shown_path(path: str | os.PathLike, start: str | os.PathLike | None = None) -> str:
    """`path` as recorded in a report: relative to `start` (default: the current folder, the
    repository root when bench_all.py runs a script) when absolute, so that no report holds an
    absolute path of the machine it ran on; a relative path stays as typed."""
    return os.path.relpath(path, start) if Path(path).is_absolute() else os.fspath(path)
