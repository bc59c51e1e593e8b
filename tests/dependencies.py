"""The ``study`` source files a module imports, directly or through other ``study`` modules (by parsing, not importing)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def module_file(module: str) -> Path:
    base = REPO / Path(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _top_level(nodes: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run when the module is imported (imports inside functions run only when called)."""
    out = []
    for node in nodes:
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            out += _top_level(node.body + node.orelse + getattr(node, "finalbody", []))
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in _top_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "study"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "study" and node.level == 0:
            found.add(node.module)
            # `from study.core import models`: the name may be a module of the package
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}").is_file()}
    return found


def study_files(module: str) -> set[Path]:
    """Every source file of ``study`` that importing ``module`` executes (package ``__init__`` files included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
            path = module_file(".".join(parts[:i]))
            if path.is_file() and path not in seen:
                seen.add(path)
                todo += sorted(_imports(path))
    return seen
