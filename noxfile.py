"""Sessions for the SDA-QEC monorepo: one hand-written file, parametrised by package.

`nox -s lint diffaug tests` is the CI command (see README). Virtualenvs are reused between
runs, and every torch-using session installs the same pinned-range stack, so a machine pays
for torch once per session directory, and CI (which runs `tests` only with torch) once.
"""

from __future__ import annotations

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "diffaug", "tests"]

DIFFAUG = "packages/diffaug"
QCLASSIFY = "packages/qclassify"
TORCH_STACK = ["torch>=2.2", "torchvision>=0.17"]
TEST_TOOLS = ["pytest>=8", "diffusers>=0.25"]


def install_everything(session: nox.Session) -> None:
    """Both packages with every extra, torch first so pip resolves one torch for all."""
    session.install(*TORCH_STACK)
    session.install("-e", f"{DIFFAUG}[fid]", "-e", f"{QCLASSIFY}[onnx,lightning]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over packages, tests and tools."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "packages", "tests", "tools", "noxfile.py")


@nox.session
def diffaug(session: nox.Session) -> None:
    """diffaug alone, in a venv without torch: proves the generator is framework-agnostic."""
    session.install("-e", DIFFAUG, "pytest>=8")
    session.run("python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)")
    session.run("pytest", "tests/diffaug", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Every test (diffaug, qclassify, end-to-end) in one reused venv."""
    install_everything(session)
    session.install(*TEST_TOOLS)
    session.run("pytest", *session.posargs, env={"OMP_NUM_THREADS": "2"})
