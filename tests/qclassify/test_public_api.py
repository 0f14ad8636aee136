"""Contract: every name that `qclassify.__all__` promises resolves to an object."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import qclassify  # noqa: E402


@pytest.mark.parametrize("name", qclassify.__all__)
def test_all_names_resolve(name):
    """Each lazily exported name imports from the module its table names."""
    assert getattr(qclassify, name) is not None


def test_unknown_names_are_attribute_errors():
    """A name outside __all__ is an AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        qclassify.nosuch  # noqa: B018


def test_modules_import_each_other_without_cycles():
    """Layering: the graph of qclassify's imports between its own modules (those inside
    functions included) has no cycle, so every module has a place in one order of layers."""
    import ast
    from pathlib import Path

    root = Path(qclassify.__file__).parent
    graph = {}
    for source in root.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qclassify."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "qclassify":
                imported.update(alias.name for alias in node.names)
        graph[source.stem] = imported & {p.stem for p in root.glob("*.py")}
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, " -> ".join([*visiting, module])
        if module in done:
            return
        visiting.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
