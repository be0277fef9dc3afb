"""``jupyter taskrun values|files|notebook`` and ``list --values``: what a task gave back.

* ``values TASK [--json]``: the latest value per name, and how many points each series has;
* ``files TASK [--json]``: the collected ``outputs`` (path, size, sha256), the refused ones with
  the reason, the patterns that matched nothing; ``files TASK --get PATH [-o FILE|-]`` downloads one
  byte-identical (default: its base name here; an existing file only with ``--force``);
* ``notebook TASK --html [--no-input] [-o FILE|-]``: the executed notebook as HTML (the report
  without code with ``--no-input``); without ``--html`` the ``.ipynb`` (as ``download``);
* ``list --values accuracy,loss``: one column per name (``—``: not recorded); ``--sort
  values.accuracy`` / ``-values.accuracy`` and ``--where 'values.accuracy>=0.9'`` go to the server.

Every command takes what ``show`` takes (an id, a unique prefix or a name). Printed text goes
through ``cli_render.safe``: a value or a file name never writes terminal escapes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .cli_render import safe
from .client import TaskRunClient
from .client.resolve import resolve_task
from .formatting import format_bytes

UNKNOWN = "\u2014"


def value_text(value: Any, width: int = 30) -> str:
    """A recorded value in one short cell: numbers to 6 significant digits, text as is, JSON otherwise."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = f"{value:.6g}"
    elif isinstance(value, (int, float, str)):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = safe(text.replace("\n", " "))
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def with_value_columns(lines: list[str], tasks: list[dict[str, Any]], names: list[str]) -> list[str]:
    """``list_lines`` output (a header, then one line per task) with a column per value name."""
    cells = [[safe(n) for n in names]] + [[value_text((t.get("values") or {}).get(n, UNKNOWN)) for n in names] for t in tasks]
    widths = [max(len(row[i]) for row in cells) for i in range(len(names))]
    base = max(len(line) for line in lines)
    return [
        (line.ljust(base) + "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for line, row in zip(lines, cells, strict=True)
    ]


def value_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give value names, comma-separated: --values accuracy,loss")
    return names


def add_list_options(p: argparse.ArgumentParser) -> None:
    """``list``'s options for recorded values."""
    p.add_argument("--values", type=value_names, metavar="A,B", help="show these recorded values as columns")
    p.add_argument("--sort", metavar="values.NAME", help="order by a recorded value (-values.NAME: descending; tasks without it last)")
    p.add_argument(
        "--where",
        action="append",
        metavar="COND",
        help="only tasks whose value matches, e.g. 'values.accuracy>=0.9' (repeatable: all hold)",
    )


def attach_sort_value(argv: list[str]) -> list[str]:
    """``--sort -values.x`` as ``--sort=-values.x``: argparse would take ``-values.x`` for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--sort" and arg.startswith("-values."):
            out[-1] = f"--sort={arg}"
        else:
            out.append(arg)
    return out


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    def add(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        p.add_argument("id", metavar="TASK", help="a task id, a unique id prefix or a task name (the newest task of that name)")
        return p

    p = add("values", "show the values a task recorded with record()", cmd_values)
    p.add_argument("--json", action="store_true", help="print the latest values and every series as JSON")

    p = add("files", "list a task's output files, or download one with --get", cmd_files)
    p.add_argument("--get", metavar="PATH", help="download this file (a path as listed)")
    p.add_argument("-o", "--output", metavar="FILE", help="with --get: where to write it ('-': stdout; default: its name, here)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")

    p = add("notebook", "save a task's executed notebook, as .ipynb or (--html) as HTML", cmd_notebook)
    p.add_argument("--html", action="store_true", help="HTML through nbconvert")
    p.add_argument("--no-input", action="store_true", help="with --html: the report, without code cells")
    p.add_argument("-o", "--output", metavar="FILE", help="file or folder (default: NAME-ID.html / .executed.ipynb here; '-': stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def _write(data: bytes, target: str | None, default_name: str, force: bool) -> int:
    if target == "-":
        out = getattr(sys.stdout, "buffer", None)
        sys.stdout.flush()
        if out is not None:
            out.write(data)
            out.flush()
        else:
            sys.stdout.write(data.decode("utf-8", errors="replace"))
        return 0
    path = Path(target or default_name)
    if path.is_dir():
        path = path / default_name
    if path.exists() and not force:
        print(safe(f"jupyter taskrun: error: {path} exists (--force overwrites it)"), file=sys.stderr)
        return 1
    path.write_bytes(data)
    print(safe(str(path)))
    return 0


def cmd_values(client: TaskRunClient, args: argparse.Namespace) -> int:
    task = resolve_task(client, args.id)
    body = client.values(task["id"])
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    if not body["values"]:
        print(f"task {task['id']}: no values recorded", file=sys.stderr)
        return 0
    width = max(len(n) for n in body["values"])
    for name, latest in body["values"].items():
        points = body["series"].get(name, [])
        steps = [p["step"] for p in points if p["step"] is not None]
        extra = f"  ({len(points)} points, steps {value_text(steps[0])}..{value_text(steps[-1])})" if steps else ""
        print(safe(name).ljust(width) + "  " + value_text(latest, 60) + extra)
    return 0


def cmd_files(client: TaskRunClient, args: argparse.Namespace) -> int:
    task = resolve_task(client, args.id)
    if args.get:
        data = client.download_file(task["id"], args.get)
        return _write(data, args.output, Path(args.get).name, args.force)
    listing = client.files(task["id"])
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    if not listing["collected"]:
        if not listing["outputs"]:
            what = "asked for no output files"
        elif task.get("status") in ("queued", "running"):
            what = "has not collected its output files yet (they are collected when it ends)"
        else:
            what = "collected no output files (it ended before its kernel ran)"
        print(f"task {task['id']} {what}", file=sys.stderr)
        return 0
    for f in listing["files"]:
        print(safe(f"{format_bytes(f['size']):>10}  {f['sha256'][:12]}  {f['path']}"))
    for f in listing["refused"]:
        size = format_bytes(f["size"]) if f.get("size") is not None else UNKNOWN
        print(safe(f"{size:>10}  refused       {f['path']}: {f['reason']}"))
    for pattern in listing["missing"]:
        print(safe(f"{UNKNOWN:>10}  no match      {pattern}"))
    return 0


def cmd_notebook(client: TaskRunClient, args: argparse.Namespace) -> int:
    from .formatting import executed_notebook_name

    task = resolve_task(client, args.id)
    name = executed_notebook_name(task.get("name"), task["id"])
    if args.html:
        data = client.notebook_html(task["id"], no_input=args.no_input).encode("utf-8")
        name = name.removesuffix(".executed.ipynb") + ".html"
    else:
        if args.no_input:
            print("jupyter taskrun: error: --no-input needs --html", file=sys.stderr)
            return 2
        data = (json.dumps(client.notebook(task["id"]), indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    return _write(data, args.output, name, args.force)
