"""Sessions for the SDA-QEC monorepo: one hand-written file, parametrised by package.

`nox -s lint diffaug package tests` is the CI command (see README). Virtualenvs are reused between
runs, and every torch-using session installs the same pinned-range stack, so a machine pays
for torch once per session directory, and CI (which runs `tests` only with torch) once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "diffaug", "package", "tests"]  # what CI runs

DIFFAUG = "packages/diffaug"
QCLASSIFY = "packages/qclassify"
TORCH_STACK = ["torch>=2.2", "torchvision>=0.17"]
# diffusers: the schedule oracle; imbalanced-learn, scikit-learn and MONAI: the augmenter inside
# their pipelines (tests/diffaug importorskips them, so the torch-free `diffaug` session skips).
TEST_TOOLS = ["pytest>=8", "diffusers>=0.25", "imbalanced-learn>=0.13", "scikit-learn>=1.3",
              "monai>=1.4"]


def install_everything(session: nox.Session) -> None:
    """Both packages with every extra, torch first so pip resolves one torch for all."""
    session.install(*TORCH_STACK)
    session.install("-e", f"{DIFFAUG}[fid,dicom]",
                    "-e", f"{QCLASSIFY}[pennylane,lightning,dicom,onnx]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over packages, tests and tools."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "packages", "tests", "tools", "noxfile.py")


def run_isolated(session: nox.Session, package: str, *, torch_free: bool = False) -> None:
    """Install one package alone (no sibling, no extras) and run its own tests."""
    session.install("-e", f"packages/{package}", "pytest>=8")
    if torch_free:
        session.run("python", "-c", "import importlib.util as u, sys; "
                    "sys.exit('torch is installed' if u.find_spec('torch') else 0)")
    # The package's own tests and its adversarial (hardening) tests.
    adversarial = sorted(str(p) for p in Path("tests/adversarial").glob(f"test_{package}_*.py"))
    session.run("pytest", f"tests/{package}", *adversarial, *session.posargs)


@nox.session
def diffaug(session: nox.Session) -> None:
    """diffaug alone, in a venv without torch: proves the generator is framework-agnostic."""
    run_isolated(session, "diffaug", torch_free=True)


@nox.session
def qclassify(session: nox.Session) -> None:
    """qclassify alone, without diffaug: it only reads diffaug's manifest format."""
    run_isolated(session, "qclassify")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test (diffaug, qclassify, end-to-end) in one reused venv."""
    install_everything(session)
    session.install(*TEST_TOOLS)
    session.run("pytest", *session.posargs, env={"OMP_NUM_THREADS": "2"})


@nox.session
def package(session: nox.Session) -> None:
    """Build both packages' sdist and wheel (python -m build) and check their metadata and
    README rendering with twine, as PyPI would."""
    session.install("build>=1.0", "twine>=5")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)  # only this run's files are checked
    for package_dir in (DIFFAUG, QCLASSIFY):
        session.run("python", "-m", "build", "--outdir", str(dist), package_dir)
    session.run("twine", "check", "--strict", *map(str, sorted(dist.iterdir())))


@nox.session
def demo(session: nox.Session) -> None:
    """The whole pipeline on generated data, no download: `nox -s demo -- [OUT] [options]`
    (see tools/demo/run_demo.py; under 15 minutes on 2 CPU cores, on the GPU when there is one);
    `nox -s demo -- --format dicom` runs it on DICOM files grouped by PatientID."""
    install_everything(session)
    session.run("python", "tools/demo/run_demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark, one report: `nox -s bench -- [--quick] [--out PATH] [--only NAME]`
    (see tools/bench/bench_all.py). The FID parts need TORCH_HOME holding the FID weights."""
    install_everything(session)
    session.run("python", "tools/bench/bench_all.py", *session.posargs)


@nox.session
def medmnist(session: nox.Session) -> None:
    """A MedMNIST subset end to end: `nox -s medmnist -- PATH.npz [options]`
    (see tools/medmnist/run_medmnist.py)."""
    if not session.posargs:
        session.error("pass the MedMNIST file: nox -s medmnist -- PATH.npz [run_medmnist.py "
                      "options]")
    install_everything(session)
    session.run("python", "tools/medmnist/run_medmnist.py", *session.posargs)
