"""The TypeScript twin of jupyter_taskrun.formatting (labextension/src/format.ts), compiled to
labextension/lib/format.js and run with node: it must give the shared example table
(tests/formatting_examples.json) exactly, and agree with Python on edge cases where the two
languages differ by default (exact rounding ties, unicode and odd names, escape kinds)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from jupyter_taskrun.formatting import executed_notebook_name, format_bytes, format_duration, strip_ansi

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "labextension" / "lib" / "format.js"
SOURCE = ROOT / "labextension" / "src" / "format.ts"
SCRIPT = ROOT / "labextension" / "scripts" / "check-format.mjs"
EXAMPLES = Path(__file__).parent / "formatting_examples.json"

pytestmark = pytest.mark.skipif(not COMPILED.exists(), reason="labextension/lib/format.js is not built (cd labextension && jlpm build:lib)")


def run_check(table: Path) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH (it is needed to build the lab extension too)"
    result = subprocess.run([node, str(SCRIPT), str(table)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        hint = ""
        if SOURCE.exists() and SOURCE.stat().st_mtime > COMPILED.stat().st_mtime:
            hint = "\n(src/format.ts is newer than lib/format.js: rebuild with `cd labextension && jlpm build:lib`)"
        pytest.fail(f"{result.stderr.strip() or result.stdout.strip()}{hint}", pytrace=False)


def test_compiled_format_matches_the_shared_examples() -> None:
    run_check(EXAMPLES)


def _edge_cases() -> dict[str, list]:
    """Inputs where a naive port goes wrong, with Python's answers as the expected text."""
    rng = random.Random(20261122)
    durations: list[float | None] = [0.0005, 0.0015, 0.0025, 0.25, 0.5, 0.9996, 1.25, 4.25, 4.75, 9.95, 9.96]
    durations += [10.5, 11.5, 42.5, 59.5, 59.6, 60.5, 61.5, 89.5, 3599.5, 3600.5, 86399.5, 86400, 10**9, -0.0, -1e9]
    durations += [round(rng.uniform(0, 10 ** rng.randint(0, 7)), rng.randint(0, 3)) for _ in range(300)]
    sizes: list[float | None] = [0, -0.0, 0.5, 2.5, 1023, 1024, 1023.5, -1536, 4.25 * 1024, 4.75 * 1024]
    sizes += [99.95 * 1024, 99.96 * 1024, 100 * 1024, 1024**4 * 2.25, 1024**5 * 3, 1e30]
    sizes += [rng.randint(0, 1 << rng.randint(1, 50)) for _ in range(200)]
    sizes += [round(rng.uniform(0, 1024**3), rng.randint(0, 2)) for _ in range(100)]
    names: list[str | None] = [None, "notebook.IPYNB", "a\\b\\c.py", "..hidden.py", "-" * 50, "x" * 60 + ".ipynb"]
    names += ["données / été.ipynb", "🚀 launch.py", "archive.tar.gz", "name.txt", "trailing.", "  spaced  name  "]
    names += ["a" * 39 + "-b", "dir/", "./rel/../up.py", "x = 1; print(x)"]
    escapes = [
        "\x1b[38;5;196mbright\x1b[0m",
        "\x1b[?25lhidden cursor\x1b[?25h",
        "\x1b]8;;https://example.org\x1b\\link\x1b]8;;\x1b\\",
        "\x1b]0;unterminated title",
        "\x1b(B kept: not a two-byte escape",
        "\x1b[1;2 q cursor shape",
        "plain \x07 bell",
    ]
    return {
        "duration": [[s, format_duration(s)] for s in durations],
        "bytes": [[n, format_bytes(n)] for n in sizes],
        "executed_name": [[[n, "0123456789abcdef"], executed_notebook_name(n, "0123456789abcdef")] for n in names],
        "strip_ansi": [[raw, strip_ansi(raw)] for raw in escapes],
    }


def test_compiled_format_agrees_with_python_on_edge_cases(tmp_path: Path) -> None:
    table = tmp_path / "edge_cases.json"
    table.write_text(json.dumps(_edge_cases(), allow_nan=False), encoding="utf-8")
    run_check(table)
