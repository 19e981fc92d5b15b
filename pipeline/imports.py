"""The project's import graph, read from the source (never imported or run): which `pipeline`
modules a module imports, at any depth. Two things are derived from it so that neither can drift
from the code: the files a training run's key fingerprints (stage2/compare/runs.code_files) and
the code each DVC stage must list as its deps (tests/test_dvc_pipeline.py)."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]   # the folder holding `pipeline/`


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of a module under root (a package: its __init__.py), or None."""
    p = root.joinpath(*module.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def imported(path: Path, module: str, root: Path = PACKAGE_ROOT) -> set[str]:
    """The `pipeline` modules a source file imports (absolute or relative; inside functions too):
    `from P import x` counts the submodule P.x when it is one, else P itself."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "pipeline":
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if module_file(f"{base}.{a.name}", root) else base)
    return out


def registry_members(path: Path, module: str) -> set[str]:
    """A registry package imports every module beside its __init__ at run time (`_register_all`:
    pkgutil, invisible to `imported`): those modules; none for any other file."""
    if path.name != "__init__.py" or "pkgutil.iter_modules(__path__)" not in path.read_text():
        return set()
    return {f"{module}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py"}


def closure(starts: Iterable[str], root: Path = PACKAGE_ROOT, *, skip: Iterable[str] = (),
            narrow: Callable[[str, set[str]], set[str]] | None = None, as_imported: bool = False) -> list[str]:
    """Every module reached from `starts` through the import statements, in name order; a module
    in `skip` is neither listed nor followed. `narrow(module, found)`: the imports of `module` to
    follow (default: all of them). `as_imported`: also what Python runs on an import without a
    statement naming it: a module's parent packages and a registry package's members
    (`registry_members`)."""
    skip = set(skip)
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in seen or module in skip:
            continue
        path = module_file(module, root)
        if path is None:
            continue
        seen.add(module)
        found = imported(path, module, root)
        if as_imported:
            parts = module.split(".")
            found |= registry_members(path, module) | {".".join(parts[:i]) for i in range(1, len(parts))}
        todo.extend(narrow(module, found) if narrow else found)
    return sorted(seen)
