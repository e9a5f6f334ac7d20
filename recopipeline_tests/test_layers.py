"""Layers in one direction: `defs/` wires Dagster over `lib/` and `serving/`, which know nothing of Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "recopipeline"
PLAIN = ("lib", "serving")  # plain Python: no Dagster, no Dagster wiring


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", PLAIN)
def test_plain_layers_import_neither_dagster_nor_defs(layer):
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in imported_modules(path)
            if name.split(".")[0] in ("dagster", "dagster_duckdb", "dagster_postgres")
            or name.startswith("recopipeline.defs")
        )
        for path in sorted((PACKAGE / layer).rglob("*.py"))
    }
    assert {file: names for file, names in offending.items() if names} == {}


TOOLS = ("bench", "evaluation", "mcp_server.py")  # run stages and read tables without the orchestrator


@pytest.mark.parametrize("tool", TOOLS)
def test_tools_run_the_engine_without_defs(tool):
    paths = [PACKAGE / tool] if tool.endswith(".py") else sorted((PACKAGE / tool).rglob("*.py"))
    offending = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if n.startswith("recopipeline.defs"))
        for path in paths
    }
    assert {file: names for file, names in offending.items() if names} == {}
