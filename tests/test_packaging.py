"""What the package imports is what it declares: a dependency that only happens to be
installed (brought by another package) can disappear in a user's environment."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support import REPO_ROOT

OURS = {"fastapi_opinionated_eventbus", "pytest_fastapi_opinionated_eventbus"}
# The pytest plugin module runs only inside pytest.
PROVIDED_BY_THE_RUNNER = {"pytest"}


def imported_modules() -> dict[str, str]:
    """Top-level module -> one file importing it, over the package and the pytest plugin."""
    files = [
        *sorted((REPO_ROOT / "fastapi_opinionated_eventbus").rglob("*.py")),
        REPO_ROOT / "pytest_fastapi_opinionated_eventbus.py",
    ]
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(REPO_ROOT)))
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = declared_distributions()
    providers = packages_distributions()
    undeclared = []
    for module, where in sorted(imported_modules().items()):
        if module in sys.stdlib_module_names or module in OURS | PROVIDED_BY_THE_RUNNER:
            continue
        distributions = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared.append(f"{module} (imported by {where})")
    assert undeclared == []


def test_the_wheel_ships_the_catalog_page(tmp_path: Path) -> None:
    """The page's HTML, script and stylesheet are package data, not Python modules."""
    poetry = REPO_ROOT / ".tools" / "poetry" / "bin" / "poetry"
    if not poetry.exists():
        pytest.skip("no Poetry in .tools/poetry: run bash scripts/bootstrap.sh")
    subprocess.run(
        [str(poetry), "build", "--format", "wheel", "--output", str(tmp_path), "--quiet"],
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = "fastapi_opinionated_eventbus/_observability/static/"
    assert {f"{static}catalog.{ext}" for ext in ("html", "js", "css")} <= names
