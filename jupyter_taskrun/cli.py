"""``jupyter taskrun`` — submit, follow and manage background tasks from a shell.

Exit codes: 0 on success; 1 when a task waited for (``--wait``/``--follow``) did not complete
(failed, cancelled, timed out) or when the server refused a request or could not be reached;
2 for usage errors; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .client import TaskRunClient, TaskRunHTTPError
from .errors import TaskRunError
from .formatting import format_bytes, format_duration, strip_ansi
from .models import TaskStatus

PROG = "jupyter taskrun"


class UsageError(Exception):
    """A problem with the command line, reported like argparse does (exit code 2)."""


#: C0 and C1 control characters and DEL: in a task name they could move the cursor, rewrite the
#: screen or the window title, or hide text (``\x1b]0;...``, ``\x1b[2J``, ``\r``)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _safe(value: Any, *, newlines: bool = False) -> str:
    """Text from the server (names, tags, owners, errors, statuses) made inert for a terminal:
    control characters are shown escaped (``\x1b``). Task logs are printed raw, as a terminal would."""
    text = "" if value is None else str(value)
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _key_value(kind: str, text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{kind} must look like KEY=VALUE, not {text!r}")
    return key, value


def _param(text: str) -> tuple[str, Any]:
    """``k=v``: v is read as JSON when it parses (numbers, booleans, lists...), else as a string."""
    key, value = _key_value("a parameter", text)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _env(text: str) -> tuple[str, str]:
    return _key_value("an environment variable", text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


# ---------------------------------------------------------------------------
# Formatting (durations, sizes, ANSI: the one convention of jupyter_taskrun.formatting)
# ---------------------------------------------------------------------------


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(task: dict[str, Any]) -> float | None:
    start = _parse_time(task.get("started_at"))
    if start is None:
        return None
    end = _parse_time(task.get("finished_at")) or datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())


def _fmt_time(value: str | None) -> str:
    parsed = _parse_time(value)
    if parsed is None:
        return "-"
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _error_line(task: dict[str, Any]) -> str:
    error = task.get("error") or {}
    parts = []
    if error.get("ename"):
        parts.append(f"{error['ename']}: {error.get('evalue', '')}".rstrip(": "))
    if error.get("reason") and error.get("reason") not in " ".join(parts):
        parts.append(str(error["reason"]))
    return " — ".join(parts)


def _summary(task: dict[str, Any]) -> str:
    status = task.get("status", "?")
    line = f"task {task.get('id')} {status}"
    duration = _duration(task)
    if duration is not None and _is_terminal(status):
        line += f" in {format_duration(duration)}"
    if status != TaskStatus.COMPLETED.value:
        detail = _error_line(task)
        if detail:
            line += f": {detail}"
    return _safe(line)


def _is_terminal(status: str | None) -> bool:
    try:
        return TaskStatus(status).is_terminal
    except ValueError:
        return False


def _exit_code(status: str | None, task_exit_code: int | None = None) -> int:
    """0 if it completed; a failed script's own exit status (as ``python FILE`` gives it); else 1."""
    if status == TaskStatus.COMPLETED.value:
        return 0
    if isinstance(task_exit_code, int) and 0 < task_exit_code < 256:
        return task_exit_code
    return 1


def _result_text(output: dict[str, Any]) -> str | None:
    data = output.get("data") or {}
    text = data.get("text/plain")
    if isinstance(text, list):
        text = "".join(text)
    if text is not None:
        return text
    if data:
        return "[" + ", ".join(sorted(data)) + "]"
    return None


# ---------------------------------------------------------------------------
# Live follow: logs on stdout/stderr, a progress bar on stderr
# ---------------------------------------------------------------------------


class _Console:
    """Writes task logs as they come, with a progress bar on stderr that stays out of their way.

    On a terminal the bar is one self-redrawing line, cleared before any log text and redrawn
    when the cursor is back at the start of a line; elsewhere progress is printed as plain lines
    (at most a few per second).
    """

    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err
        self.tty = bool(getattr(err, "isatty", lambda: False)())
        self.at_line_start = True
        self.bar: str | None = None
        self.bar_shown = False
        self._last_plain = ""
        self._last_plain_time = 0.0

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.bar_shown = False

    def _draw_bar(self) -> None:
        if self.tty and self.bar and self.at_line_start:
            width = shutil.get_terminal_size((80, 20)).columns
            self.err.write("\r\x1b[K" + self.bar[: max(10, width - 1)])
            self.err.flush()
            self.bar_shown = True

    def write(self, text: str, stream: str = "stdout") -> None:
        if not text:
            return
        self._clear_bar()
        target = self.err if stream == "stderr" else self.out
        if stream == "stderr" and not self.tty:
            text = strip_ansi(text)
        target.write(text)
        target.flush()
        self.at_line_start = text.endswith("\n")
        self._draw_bar()

    def line(self, text: str, stream: str = "stderr") -> None:
        if not self.at_line_start:
            text = "\n" + text
        self.write(text + "\n", stream)

    def progress(self, value: Any, total: Any, message: str = "") -> None:
        if not isinstance(value, (int, float)):
            return
        if isinstance(total, (int, float)) and total > 0:
            frac = max(0.0, min(1.0, value / total))
            width = 30
            filled = round(frac * width)
            pct = f"{frac * 100:3.0f}%"
            counts = f"{value:g}/{total:g}"
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {pct} {counts}"
            done = value >= total
        else:
            bar = f"[{value:g}]"
            done = False
        if message:
            bar += f" {_safe(message)}"
        if self.tty:
            self.bar = bar
            self._draw_bar()
            return
        now = time.monotonic()
        if bar != self._last_plain and (done or now - self._last_plain_time >= 0.25):
            self._last_plain, self._last_plain_time = bar, now
            self.line(f"progress: {bar}")

    def finish(self) -> None:
        self._clear_bar()
        self.bar = None


def _follow(client: TaskRunClient, task_id: str, *, stream: str | None = None, quiet_status=False) -> int:
    """Print the task's logs (and results, errors, progress) live; return the exit code."""
    console = _Console(sys.stdout, sys.stderr)
    final: str | None = None
    error_shown = False
    try:
        for event in client.stream_events(task_id):
            kind, data = event.get("type"), event.get("data") or {}
            if kind == "log":
                if stream is None or data.get("stream") == stream:
                    console.write(str(data.get("text", "")), data.get("stream", "stdout"))
            elif stream is not None:
                if kind == "end":
                    final = data.get("status")
                continue
            elif kind == "output":
                output = data.get("output") or {}
                if output.get("output_type") == "error":
                    console.write(_strip_ansi_if(console, "\n".join(output.get("traceback") or [])) + "\n", "stderr")
                    error_shown = True
                elif output.get("output_type") in ("execute_result", "display_data"):
                    text = _result_text(output)
                    if text is not None:
                        console.line(text, "stdout")
            elif kind == "progress":
                console.progress(data.get("value"), data.get("total"), str(data.get("message") or ""))
            elif kind == "status" and not quiet_status:
                status = data.get("status")
                if status and not _is_terminal(status):
                    console.line(_safe(f"taskrun: task {task_id} {status}"))
            elif kind == "truncated":
                console.line(_safe(f"taskrun: {data.get('message') or 'output truncated'}"))
            elif kind == "end":
                final = data.get("status")
    finally:
        console.finish()
    task = client.get(task_id)
    final = task.get("status") or final
    if stream is None:
        error = task.get("error") or {}
        if final != TaskStatus.COMPLETED.value and error.get("traceback") and not error_shown:
            console.write(_strip_ansi_if(console, "\n".join(error["traceback"])) + "\n", "stderr")
        console.line(f"taskrun: {_summary(task)}")
    return _exit_code(final, task.get("exit_code"))


def _strip_ansi_if(console: _Console, text: str) -> str:
    return text if console.tty else strip_ansi(text)


def _report_wait(client: TaskRunClient, task_id: str) -> int:
    task = client.wait(task_id)
    error = task.get("error") or {}
    if task.get("status") != TaskStatus.COMPLETED.value and error.get("traceback"):
        tb = "\n".join(error["traceback"])
        print(tb if sys.stderr.isatty() else strip_ansi(tb), file=sys.stderr)
    print(f"taskrun: {_summary(task)}", file=sys.stderr)
    return _exit_code(task.get("status"), task.get("exit_code"))


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _source_from_file(client: TaskRunClient, file: str) -> tuple[dict[str, Any], str]:
    """The submission source for FILE, and a default task name."""
    if file == "-":
        return {"code": sys.stdin.read()}, "stdin"
    p = Path(file)
    if p.suffix not in (".py", ".ipynb"):
        raise UsageError(f"FILE must be a .py script or a .ipynb notebook: {file}")
    if not p.is_file():
        raise UsageError(f"no such file: {file}")
    root = client.server_root
    if root:
        real, real_root = p.resolve(), Path(root).resolve()
        if real == real_root or real_root in real.parents:
            return {"path": real.relative_to(real_root).as_posix()}, p.name
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {file}: {e}") from None
    if p.suffix == ".py":
        return {"code": text}, p.name
    try:
        return {"notebook": json.loads(text)}, p.name
    except ValueError as e:
        raise UsageError(f"{file} is not a JSON notebook: {e}") from None


def cmd_submit(client: TaskRunClient, args: argparse.Namespace) -> int:
    if args.file and args.code is not None:
        raise UsageError("give FILE or -c CODE, not both")
    if not args.file and args.code is None:
        raise UsageError("give a FILE (.py or .ipynb) or -c CODE")
    if args.file:
        source, default_name = _source_from_file(client, args.file)
    else:
        source, default_name = {"code": args.code}, None
    options = {
        "name": args.name or default_name,
        "kernel_name": args.kernel,
        "timeout": args.timeout,
        "cell_timeout": args.cell_timeout,
        "tags": args.tag or None,
        "parameters": dict(args.param) if args.param else None,
        "env": dict(args.env) if args.env else None,
        "priority": args.priority,
        "cwd": args.cwd,
        "args": list(args.script_args) or None,
    }
    task = client.submit(**source, **options)
    return _after_submit(client, task, args)


def _after_submit(client: TaskRunClient, task: dict[str, Any], args: argparse.Namespace) -> int:
    if args.follow:
        print(f"taskrun: task {task['id']} submitted", file=sys.stderr, flush=True)
        return _follow(client, task["id"])
    if args.json and not args.wait:
        print(json.dumps(task, indent=2))
        return 0
    print(task["id"], flush=True)
    if args.wait:
        return _report_wait(client, task["id"])
    return 0


def cmd_rerun(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _after_submit(client, client.rerun(args.id), args)


def cmd_list(client: TaskRunClient, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    limit = 20 if args.limit is None else args.limit
    tasks = []
    page_size = min(limit, 200) if limit else 200
    for task in client.iter_tasks(args.status, args.tag, args.owner, args.name, page_size=page_size):
        tasks.append(task)
        if limit and len(tasks) >= limit:
            break
    if args.json:
        print(json.dumps(tasks, indent=2))
        return 0
    if not tasks:
        print("no tasks", file=sys.stderr)
        return 0
    rows = [("ID", "STATUS", "NAME", "OWNER", "CREATED", "DURATION", "TAGS")]
    for t in tasks:
        progress = t.get("progress") or {}
        status = t.get("status", "?")
        if status == "running" and isinstance(progress.get("total"), (int, float)) and progress["total"]:
            status += f" {100 * progress.get('value', 0) / progress['total']:.0f}%"
        rows.append(
            (
                str(t.get("id")),
                status,
                (t.get("name") or "")[:40],
                t.get("owner") or "",
                _fmt_time(t.get("created_at")),
                format_duration(_duration(t)),
                ",".join(t.get("tags") or []),
            )
        )
    rows = [tuple(_safe(cell) for cell in r) for r in rows]  # names, tags, owners: no terminal escapes
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(client: TaskRunClient, args: argparse.Namespace) -> int:
    task = client.get(args.id)
    if args.json:
        print(json.dumps(task, indent=2))
        return 0
    metrics = task.get("metrics") or {}
    source = task.get("source_kind", "?")
    if task.get("path"):
        source += f" {task['path']}"
    fields: list[tuple[str, Any]] = [
        ("id", task.get("id")),
        ("name", task.get("name")),
        ("status", task.get("status")),
        ("owner", task.get("owner")),
        ("kernel", task.get("kernel_name")),
        ("source", source),
        ("tags", ", ".join(task.get("tags") or []) or "-"),
        ("priority", task.get("priority")),
        ("created", _fmt_time(task.get("created_at"))),
        ("started", _fmt_time(task.get("started_at"))),
        ("finished", _fmt_time(task.get("finished_at"))),
        ("duration", format_duration(_duration(task))),
        ("exit code", "-" if task.get("exit_code") is None else task["exit_code"]),
    ]
    if task.get("queue_position") is not None:
        fields.append(("queue position", task["queue_position"]))
    if task.get("rerun_of"):
        fields.append(("rerun of", task["rerun_of"]))
    if task.get("worker"):
        fields.append(("worker", task["worker"]))
    progress = task.get("progress")
    if progress:
        total = progress.get("total")
        text = f"{progress.get('value')}" + (f"/{total}" if total is not None else "")
        if progress.get("message"):
            text += f" {progress['message']}"
        fields.append(("progress", text))
    if metrics:
        fields.append(
            (
                "metrics",
                f"wall {format_duration(metrics.get('wall'))}, queue wait {format_duration(metrics.get('queue_wait'))}, "
                + f"kernel start {format_duration(metrics.get('kernel_start'))}, cpu "
                + f"{format_duration((metrics.get('cpu_user') or 0) + (metrics.get('cpu_system') or 0))}, "
                + f"peak rss {format_bytes(metrics.get('peak_rss'))}",
            )
        )
    if task.get("error"):
        fields.append(("error", _error_line(task) or "-"))
    result = task.get("result")
    if result:
        text = _result_text(result)
        if text is not None:
            fields.append(("result", text))
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        value = "-" if value is None or value == "" else _safe(value, newlines=key == "result")
        print(f"{key + ':':<{width}} {value}")
    return 0


def cmd_logs(client: TaskRunClient, args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(client, args.id, stream=args.stream, quiet_status=True)
    data = client.logs_bytes(args.id, stream=args.stream)
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:
        sys.stdout.flush()
        out.write(data)
        out.flush()
    else:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
    return 0


def _each(ids: list[str], action) -> int:
    code = 0
    for task_id in ids:
        try:
            action(task_id)
        except TaskRunHTTPError as e:
            print(_safe(f"{PROG}: error: {task_id}: {e}"), file=sys.stderr)
            code = 1
    return code


def cmd_cancel(client: TaskRunClient, args: argparse.Namespace) -> int:
    def cancel(task_id: str) -> None:
        task = client.cancel(task_id)
        print(_safe(f"task {task_id}: cancel requested (status {task.get('status', '?')})"))

    return _each(args.ids, cancel)


def cmd_rm(client: TaskRunClient, args: argparse.Namespace) -> int:
    def rm(task_id: str) -> None:
        client.delete(task_id)
        print(f"task {task_id}: deleted")

    return _each(args.ids, rm)


def cmd_status(client: TaskRunClient, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key, value in status.items():
            print(_safe(f"{key}: {value}"))
    return 0


# ---------------------------------------------------------------------------
# Parser and entry point
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("server")
    conn.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="server base URL (default: $JUPYTER_TASKRUN_URL, else the running Jupyter server)",
    )
    conn.add_argument(
        "--token", default=argparse.SUPPRESS, help="server token (default: $JUPYTER_TASKRUN_TOKEN or runtime info)"
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run code, scripts and notebooks as tracked background tasks on a Jupyter server.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("submit", "submit a .py/.ipynb file or a snippet of code as a task", cmd_submit)
    p.epilog = "Arguments after -- are the script's sys.argv[1:], as with python FILE ARG...: submit train.py -- --lr 0.1"
    p.add_argument("file", nargs="?", metavar="FILE", help=".py script or .ipynb notebook ('-' reads code from stdin)")
    p.add_argument("-c", "--code", help="code to run (one cell)")
    p.add_argument("--name", help="task name")
    p.add_argument("--kernel", help="kernel name (default: the server's default kernel)")
    p.add_argument("--timeout", type=_positive, help="time limit for the whole task (s)")
    p.add_argument("--cell-timeout", type=_positive, help="time limit per cell (s)")
    p.add_argument("--tag", action="append", metavar="TAG", help="tag the task (repeatable)")
    p.add_argument("--param", action="append", type=_param, metavar="K=V", help="parameter (value read as JSON if it parses; repeatable)")
    p.add_argument("--env", action="append", type=_env, metavar="K=V", help="environment variable for the task (repeatable)")
    p.add_argument("--priority", type=int, help="higher runs first (default 0)")
    p.add_argument("--cwd", help="working directory, relative to the server root")
    _add_wait_options(p)

    p = add("list", "list tasks, newest first", cmd_list)
    p.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in TaskStatus],
        help="only tasks with this status (repeatable)",
    )
    p.add_argument("--tag", help="only tasks with this tag")
    p.add_argument("--owner", help="only tasks of this owner")
    p.add_argument("--name", help="only tasks whose name starts with this")
    p.add_argument("--limit", type=int, help="how many tasks to show (default 20, 0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("show", "show one task", cmd_show)
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the task as JSON")

    p = add("logs", "print a task's logs", cmd_logs)
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="follow the logs live until the task ends")
    p.add_argument("--stream", choices=["stdout", "stderr"], help="only this stream")

    p = add("cancel", "cancel tasks", cmd_cancel)
    p.add_argument("ids", nargs="+", metavar="ID")

    p = add("rm", "delete finished tasks with their logs and artifacts", cmd_rm)
    p.add_argument("ids", nargs="+", metavar="ID")

    p = add("rerun", "run a task again with the same submission", cmd_rerun)
    p.add_argument("id", metavar="ID")
    _add_wait_options(p)

    p = add("status", "show the server's task runner status", cmd_status)
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _add_wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it completed")
    p.add_argument(
        "--follow", action="store_true", help="print logs and progress live until the end; exit 1 unless it completed"
    )
    p.add_argument("--json", action="store_true", help="print the created task as JSON")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:  # split here: argparse mixes '--' with optional positionals of subcommands
        at = argv.index("--")
        argv, script_args = argv[:at], argv[at + 1 :]
    args = parser.parse_args(argv)
    if script_args and args.command != "submit":
        parser.error("arguments after -- belong to a script: submit FILE -- ARG...")
    args.script_args = script_args
    try:
        client = TaskRunClient(url=getattr(args, "url", None), token=getattr(args, "token", None))
        return args.func(client, args)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except TaskRunError as e:
        print(_safe(f"{PROG}: error: {e}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `jupyter taskrun logs ID | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
