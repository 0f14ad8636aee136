"""The pipeline runner shared by tools/demo/run_demo.py and tools/medmnist/run_medmnist.py.

Both run the same three stages into the same layout, ``OUT/data`` (the original images),
``OUT/balanced`` (``diffaug balance``'s output) and ``OUT/report`` (``qclassify compare``'s
report), each stage as the command a user would type:

    [1/4] convert the MedMNIST file to split/class folders
    $ python tools/medmnist/medmnist_to_folder.py breastmnist.npz medmnist-out/breastmnist/data

A step whose work is already recorded as done (or that cannot run here, such as FID without
cached weights) prints why and is skipped, so a rerun continues where the last one stopped; a
failing step stops the pipeline with one line naming it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class PipelineLayout:
    """The folders of one pipeline run under `root`."""

    root: Path

    @property
    def data(self) -> Path:
        """The original images, split/class folders."""
        return self.root / "data"

    @property
    def balanced(self) -> Path:
        """`diffaug balance`'s copy of `data` with the synthetic minority images."""
        return self.root / "balanced"

    @property
    def report(self) -> Path:
        """`qclassify compare`'s report and run folders."""
        return self.root / "report"


SkipCheck = Callable[[], str | None]


@dataclass(frozen=True)
class Step:
    """One pipeline step: `shown` is what a user would type, `argv` what runs.

    `skip`, when given, is asked just before the step: a reason (printed instead of running the
    step) or None (run it); a ValueError or OSError it raises stops the pipeline at this step.
    """

    name: str  # short, for timings and lookups
    title: str
    argv: list[str]
    shown: list[str]
    skip: SkipCheck | None = None


class StepFailed(click.ClickException):
    """A step failed or could not be checked: one line naming it, exit status 1."""


def typed_path(path: str | os.PathLike) -> str:
    """`path` as a user in the current folder would type it: relative when it lies below."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return os.path.relpath(path)
    return str(path)


def as_typed(argv: Sequence[str], *, python: str = sys.executable) -> list[str]:
    """`argv` as a user types it: 'python' for the interpreter and, right after it, a script
    by its path relative to the current folder when it lies below it."""
    shown = list(argv)
    if shown and shown[0] == python:
        shown[0] = "python"
        if len(shown) > 1 and shown[1].endswith(".py"):
            shown[1] = typed_path(shown[1])
    return shown


def script_step(name: str, title: str, script: Path, args: Sequence[str], *,
                skip: SkipCheck | None = None, python: str = sys.executable) -> Step:
    """A step that runs a tools/ script with this interpreter."""
    argv = [python, str(script), *args]
    return Step(name, title, argv, as_typed(argv, python=python), skip)


def module_step(name: str, title: str, package: str, args: Sequence[str], *,
                console_script: bool = False, skip: SkipCheck | None = None,
                python: str = sys.executable) -> Step:
    """A step that runs `python -m package args`, shown as that or, with `console_script`,
    as the package's own command (`diffaug balance ...`)."""
    argv = [python, "-m", package, *args]
    shown = [package, *args] if console_script else as_typed(argv, python=python)
    return Step(name, title, argv, shown, skip)


def heading(number: int, total: int, title: str) -> str:
    """The line that opens step `number` of `total`, after a blank line."""
    return f"\n[{number}/{total}] {title}"


def run_steps(steps: Sequence[Step], *, total: int | None = None,
              echo: Callable[[str], None] = click.echo) -> dict[str, float]:
    """Echo and run `steps` in order, skipping those whose check gives a reason; returns the
    wall seconds of each step that ran, by step name. `total` counts steps the caller adds
    after these (a results step), for the `[n/total]` headings.

    Raises:
        StepFailed: a step exited non-zero, or its skip check raised ValueError or OSError.
    """
    total = len(steps) if total is None else total
    seconds: dict[str, float] = {}
    for number, step in enumerate(steps, start=1):
        reason = _skip_reason(number, step)
        echo(heading(number, total, step.title))
        if reason is not None:
            echo(reason)
            continue
        seconds[step.name] = _run(number, step, echo)
    return seconds


def _skip_reason(number: int, step: Step) -> str | None:
    if step.skip is None:
        return None
    try:
        return step.skip()
    except (ValueError, OSError) as err:
        raise StepFailed(f"step {number} ({step.title}): {err}") from None


def _run(number: int, step: Step, echo: Callable[[str], None]) -> float:
    command = shlex.join(step.shown)
    echo(f"$ {command}")
    started = time.perf_counter()
    status = subprocess.run(step.argv, check=False).returncode
    if status != 0:
        raise StepFailed(f"step {number} ({step.title}) failed with exit status {status}: "
                         f"{command}; fix the cause and rerun to continue")
    return time.perf_counter() - started
