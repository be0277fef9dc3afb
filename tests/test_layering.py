"""The package's layering, checked on the source (ast; nothing is imported or run).

- ``client/``, ``notebook/`` and ``cli.py`` (+ ``cli_render.py``) talk to the server over HTTP only: they import
  nothing from ``jupyter_taskrun.server`` or ``jupyter_taskrun.execution`` (absolute or
  relative imports, at module level or inside functions).
- ``execution/`` runs notebooks in kernels for any front end: it imports nothing from
  ``server/``, ``client/`` or ``notebook/``.
- House style: no module of the package is over 650 lines (the built labextension aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jupyter_taskrun"
MAX_LINES = 650


def modules(*parts: str) -> list[Path]:
    """The ``.py`` files of these sub-packages / modules of the package."""
    out: list[Path] = []
    for part in parts:
        path = PACKAGE / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert out, parts
    return out


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[tuple[int, str]]:
    """Every module this file imports, resolved to an absolute dotted name, with its line.

    ``from . import x`` counts as importing both the package and ``package.x`` (``x`` may be
    a submodule), so a relative import of a forbidden sub-package is caught either way.
    """
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):  # walk: imports inside functions and classes count too
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            found.add((node.lineno, base_name))
            found |= {(node.lineno, f"{base_name}.{alias.name}") for alias in node.names if alias.name != "*"}
    return found


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in files:
        for line, name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return out


def test_import_resolution_sees_relative_and_nested_imports(tmp_path):
    """The checker itself: relative, nested and aliased imports are all resolved."""
    pkg = tmp_path / "jupyter_taskrun" / "client"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text(
        "from .. import server\n"
        "from ..execution.runner import NotebookRunner\n"
        "def later():\n"
        "    import jupyter_taskrun.server.store as s\n"
        "    from . import sibling\n"
    )
    names = {name for _, name in imported_modules(pkg / "mod.py", tmp_path)}
    assert {"jupyter_taskrun.server", "jupyter_taskrun.execution.runner", "jupyter_taskrun.server.store"} <= names
    assert "jupyter_taskrun.client.sibling" in names


def test_front_ends_do_not_import_the_server_or_the_execution_layer():
    files = modules("client", "notebook", "cli.py", "cli_render.py")
    bad = violations(files, ("jupyter_taskrun.server", "jupyter_taskrun.execution"))
    assert not bad, "front ends talk to the server over HTTP only:\n" + "\n".join(bad)


def test_execution_imports_nothing_from_server_client_or_notebook():
    bad = violations(modules("execution"), ("jupyter_taskrun.server", "jupyter_taskrun.client", "jupyter_taskrun.notebook"))
    assert not bad, "execution/ serves every front end and depends on none:\n" + "\n".join(bad)


def test_no_module_is_over_650_lines():
    sizes = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if "labextension" not in path.relative_to(PACKAGE).parts
    }
    big = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
