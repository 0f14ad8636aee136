"""The FID stack's place in diffaug (`diffaug.fid`): its imports form no cycle, the
augmentation never imports it, nothing imports the CLI, and every module imports without torch.

Contract tests, torch-free: the import graph is read from the source (lazy imports inside
functions included), so a cycle that only bites at run time is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import diffaug
import diffaug.fid

PACKAGE_ROOT = Path(diffaug.__file__).parent
FID = "diffaug.fid"
CLI_MODULES = {"diffaug.cli", "diffaug.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The diffaug modules `path` imports anywhere in its source; `from package import name`
    counts as the submodule when `name` is one."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "diffaug"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "diffaug":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def in_fid(module: str) -> bool:
    return module == FID or module.startswith(FID + ".")


def test_diffaug_imports_form_no_cycle() -> None:
    """Contract: the modules can be ordered so that each imports only earlier ones."""
    try:
        tuple(TopologicalSorter(import_graph()).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from err


def test_only_the_package_root_and_the_cli_import_the_fid_stack() -> None:
    """Contract: the augmentation modules never import `diffaug.fid` (it sits above them) and
    no library module imports the CLI."""
    graph = import_graph()
    fid_users = {name for name, imports in graph.items()
                 if not in_fid(name) and any(in_fid(module) for module in imports)}
    assert fid_users == {"diffaug", "diffaug.cli"}
    cli_users = {name for name, imports in graph.items() if imports & CLI_MODULES}
    assert cli_users == {"diffaug.__main__"}


def test_fid_public_names_resolve() -> None:
    """Contract: every name `diffaug.fid` exports exists, and the root re-exports the metric."""
    missing = [name for name in diffaug.fid.__all__ if not hasattr(diffaug.fid, name)]
    assert missing == []
    for name in ("compute_fid", "save_fid_stats", "fid_of_balanced_classes", "FidReport",
                 "KernelDistance"):
        assert getattr(diffaug, name) is getattr(diffaug.fid, name)


def test_every_fid_module_imports_without_torch() -> None:
    """Contract: each module of the subpackage, imported on its own with torch made
    unimportable, loads (torch is imported inside functions only)."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        sys.modules["torch"] = None  # any module-level torch import now fails
        import diffaug.fid
        for module in pkgutil.walk_packages(diffaug.fid.__path__, "diffaug.fid."):
            importlib.import_module(module.name)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
