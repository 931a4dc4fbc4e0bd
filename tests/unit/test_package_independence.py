"""The local server cannot share the daemon's code, and the daemon never needs the local server.

A test double that imports the daemon's modules agrees with the daemon by construction and can
never catch its mistakes; a daemon that imports the test stack would ship it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_top_level_packages(package: str) -> dict[str, set[str]]:
    """File -> the top-level names it imports, for every module of `package`."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("speechkit_local", "daemon"),
                                                    ("daemon", "speechkit_local")])  # fmt: skip
def test_neither_package_imports_the_other(package: str, forbidden: str) -> None:
    modules = imported_top_level_packages(package)
    assert len(modules) > 5  # the walk found the package
    offenders = sorted(path for path, names in modules.items() if forbidden in names)
    assert offenders == []
