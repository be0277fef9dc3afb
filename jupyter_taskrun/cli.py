"""``jupyter taskrun`` — submit, follow and manage background tasks from a shell.

Every command that takes a task (``show``, ``logs``, ``cancel``, ``wait``, ``download``, ``rm``,
``rerun``) accepts what ``%taskrun`` accepts: a full id, a unique id prefix or a task name, through
the one resolver (``jupyter_taskrun.client.resolve``). What is printed is built in
``cli_render`` (views and the live console); this module is the command line and the calls.
``schedule add|list|show|pause|resume|run|rm`` lives in ``cli_schedule`` (its ``add`` takes
``submit``'s options, ``add_task_options``).

Exit codes: 0 on success; 1 when a task waited for (``--wait``/``--follow``/``wait``) did not
complete (failed, cancelled, timed out), when a task reference matches no task or several, or
when the server refused a request or could not be reached; 2 for usage errors; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import cli_results, cli_workflows
from .cli_render import Console, exit_code, is_terminal, list_lines, result_text, safe, show_lines, status_lines, summary
from .client import TaskRunClient
from .client.resolve import resolve_schedule, resolve_task
from .errors import TaskRunError
from .formatting import executed_notebook_name, strip_ansi
from .models import TaskStatus

PROG = "jupyter taskrun"


class UsageError(Exception):
    """A problem with the command line, reported like argparse does (exit code 2)."""


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
# Live follow (the console is in cli_render)
# ---------------------------------------------------------------------------


def _follow(client: TaskRunClient, task_id: str, *, stream: str | None = None, quiet_status=False) -> int:
    """Print the task's logs (and results, errors, progress) live; return the exit code."""
    console = Console(sys.stdout, sys.stderr)
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
                    text = result_text(output)
                    if text is not None:
                        console.line(text, "stdout")
            elif kind == "progress":
                console.progress(data.get("value"), data.get("total"), str(data.get("message") or ""))
            elif kind == "status" and not quiet_status:
                status = data.get("status")
                if status and not is_terminal(status):
                    console.line(safe(f"taskrun: task {task_id} {status}"))
            elif kind == "truncated":
                console.line(safe(f"taskrun: {data.get('message') or 'output truncated'}"))
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
        console.line(f"taskrun: {summary(task)}")
    return exit_code(final, task.get("exit_code"))


def _strip_ansi_if(console: Console, text: str) -> str:
    return text if console.tty else strip_ansi(text)


def _report_wait(client: TaskRunClient, task_id: str, timeout: float | None = None) -> int:
    try:
        task = client.wait(task_id, timeout)
    except TimeoutError:
        print(safe(f"taskrun: task {task_id} did not finish within {timeout:g} s; it keeps running"), file=sys.stderr)
        return 1
    error = task.get("error") or {}
    if task.get("status") != TaskStatus.COMPLETED.value and error.get("traceback"):
        tb = "\n".join(error["traceback"])
        print(tb if sys.stderr.isatty() else strip_ansi(tb), file=sys.stderr)
    print(f"taskrun: {summary(task)}", file=sys.stderr)
    return exit_code(task.get("status"), task.get("exit_code"))


def _task_id(client: TaskRunClient, ref: str) -> str:
    """The id of the task ``ref`` means (a full id, a unique id prefix or a task name)."""
    return resolve_task(client, ref)["id"]


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


def task_submission(client: TaskRunClient, args: argparse.Namespace) -> dict[str, Any]:
    """The submission ``add_task_options`` describes (``submit``, ``schedule add``); unset options are None."""
    if args.file and args.code is not None:
        raise UsageError("give FILE or -c CODE, not both")
    if not args.file and args.code is None:
        raise UsageError("give a FILE (.py or .ipynb) or -c CODE")
    if args.file:
        source, default_name = _source_from_file(client, args.file)
    else:
        source, default_name = {"code": args.code}, None
    return {
        **source,
        "name": args.name or default_name,
        "kernel_name": args.kernel,
        "timeout": args.timeout,
        "cell_timeout": args.cell_timeout,
        "tags": args.tag or None,
        "parameters": dict(args.param) if args.param else None,
        "env": dict(args.env) if args.env else None,
        "priority": args.priority,
        "cwd": args.cwd,
        "args": list(getattr(args, "script_args", ())) or None,
        "outputs": args.outputs or None,
        "inputs": args.inputs or None,
    }


def cmd_submit(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _after_submit(client, client.submit(**task_submission(client, args)), args)


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
    return _after_submit(client, client.rerun(_task_id(client, args.id)), args)


def cmd_list(client: TaskRunClient, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    limit = 20 if args.limit is None else args.limit
    tasks = []
    page_size = min(limit, 200) if limit else 200
    schedule = resolve_schedule(client, args.schedule)["id"] if args.schedule else None
    tasks_found = client.iter_tasks(
        args.status, args.tag, args.owner, args.name, page_size=page_size, schedule=schedule, sort=args.sort, where=args.where
    )
    for task in tasks_found:
        tasks.append(task)
        if limit and len(tasks) >= limit:
            break
    if args.json:
        print(json.dumps(tasks, indent=2))
        return 0
    if not tasks:
        print("no tasks", file=sys.stderr)
        return 0
    lines = list_lines(tasks)
    if args.values:
        lines = cli_results.with_value_columns(lines, tasks, args.values)
    for line in lines:
        print(line)
    return 0


def cmd_show(client: TaskRunClient, args: argparse.Namespace) -> int:
    task = resolve_task(client, args.id)
    if task["id"] != args.id:  # found in a listing: ask for the task itself (e.g. its queue position)
        task = client.get(task["id"])
    if args.json:
        print(json.dumps(task, indent=2))
        return 0
    for line in show_lines(task):
        print(line)
    return 0


def cmd_logs(client: TaskRunClient, args: argparse.Namespace) -> int:
    task_id = _task_id(client, args.id)
    if args.follow:
        return _follow(client, task_id, stream=args.stream, quiet_status=True)
    data = client.logs_bytes(task_id, stream=args.stream)
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:
        sys.stdout.flush()
        out.write(data)
        out.flush()
    else:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
    return 0


def cmd_wait(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _report_wait(client, _task_id(client, args.id), args.timeout)


def cmd_download(client: TaskRunClient, args: argparse.Namespace) -> int:
    """The executed notebook, to a local file (the one naming convention) or stdout (``-o -``)."""
    task = resolve_task(client, args.id)
    text = json.dumps(client.notebook(task["id"]), indent=1, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args.output or executed_notebook_name(task.get("name"), task["id"]))
    if target.is_dir():
        target = target / executed_notebook_name(task.get("name"), task["id"])
    if target.exists() and not args.force:
        print(safe(f"{PROG}: error: {target} exists (--force overwrites it)"), file=sys.stderr)
        return 1
    target.write_text(text, encoding="utf-8")
    print(target)
    return 0


def _each(refs: list[str], action) -> int:
    """``action(task_id)`` for each reference; a failure is reported and the others still run."""
    code = 0
    for ref in refs:
        try:
            action(ref)
        except TaskRunError as e:
            print(safe(f"{PROG}: error: {ref}: {e}"), file=sys.stderr)
            code = 1
    return code


def cmd_cancel(client: TaskRunClient, args: argparse.Namespace) -> int:
    def cancel(ref: str) -> None:
        task_id = _task_id(client, ref)
        task = client.cancel(task_id, cascade=args.cascade)
        print(safe(f"task {task_id}: cancel requested (status {task.get('status', '?')})"))

    return _each(args.ids, cancel)


def cmd_rm(client: TaskRunClient, args: argparse.Namespace) -> int:
    def rm(ref: str) -> None:
        task_id = _task_id(client, ref)
        client.delete(task_id)
        print(f"task {task_id}: deleted")

    return _each(args.ids, rm)


def cmd_status(client: TaskRunClient, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for line in status_lines(status, client.url):
        print(line)
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
    conn.add_argument("--token", default=argparse.SUPPRESS, help="server token (default: $JUPYTER_TASKRUN_TOKEN or runtime info)")

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
    add_task_options(p)
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
    p.add_argument("--schedule", metavar="SCHEDULE", help="only tasks this schedule made (an id, a unique id prefix or a name)")
    p.add_argument("--limit", type=int, help="how many tasks to show (default 20, 0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    cli_results.add_list_options(p)

    p = add("show", "show one task", cmd_show)
    _add_task_ref(p)
    p.add_argument("--json", action="store_true", help="print the task as JSON")

    p = add("logs", "print a task's logs", cmd_logs)
    _add_task_ref(p)
    p.add_argument("-f", "--follow", action="store_true", help="follow the logs live until the task ends")
    p.add_argument("--stream", choices=["stdout", "stderr"], help="only this stream")

    p = add("wait", "wait for a task to end; exit 1 unless it completed", cmd_wait)
    _add_task_ref(p)
    p.add_argument("--timeout", type=_positive, help="give up waiting after this many seconds (exit 1)")

    p = add("download", "save a task's executed notebook to a local file", cmd_download)
    _add_task_ref(p)
    p.add_argument("-o", "--output", metavar="PATH", help="file or folder (default: NAME-ID.executed.ipynb here; '-': stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = add("cancel", "cancel tasks", cmd_cancel)
    _add_task_ref(p, several=True)
    p.add_argument("--cascade", action="store_true", help="also cancel the waiting tasks that depend on them")

    p = add("rm", "delete finished tasks with their logs and artifacts", cmd_rm)
    _add_task_ref(p, several=True)

    p = add("rerun", "run a task again with the same submission", cmd_rerun)
    _add_task_ref(p)
    _add_wait_options(p)

    p = add("status", "show the server's task runner status", cmd_status)
    p.add_argument("--json", action="store_true", help="print JSON")

    from . import cli_schedule  # here, not at the top: cli_schedule imports this module

    cli_schedule.add_command(sub, common)
    cli_results.add_commands(sub, common)
    cli_workflows.add_commands(sub, common)
    return parser


def add_task_options(p: argparse.ArgumentParser) -> None:
    """What a task runs and how: the options of ``submit``, shared by ``schedule add`` (and ``%taskrun schedule add``)."""
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
    p.add_argument("--outputs", action="append", metavar="GLOB", help="collect these files (relative to the cwd) when it ends (repeatable)")
    p.add_argument("--inputs", action="append", metavar="PATH", help="a file or folder it reads, staged for a Dask worker (repeatable)")
    p.set_defaults(script_args_allowed=True)


def _add_task_ref(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    help_text = "a task id, a unique id prefix or a task name (the newest task of that name)"
    if several:
        p.add_argument("ids", nargs="+", metavar="TASK", help=help_text)
    else:
        p.add_argument("id", metavar="TASK", help=help_text)


def _add_wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it completed")
    p.add_argument("--follow", action="store_true", help="print logs and progress live until the end; exit 1 unless it completed")
    p.add_argument("--json", action="store_true", help="print the created task as JSON")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:  # split here: argparse mixes '--' with optional positionals of subcommands
        at = argv.index("--")
        argv, script_args = argv[:at], argv[at + 1 :]
    args = parser.parse_args(cli_results.attach_sort_value(argv))
    if script_args and not getattr(args, "script_args_allowed", False):
        parser.error("arguments after -- belong to a script: submit FILE -- ARG...")
    args.script_args = script_args
    try:
        client = TaskRunClient(url=getattr(args, "url", None), token=getattr(args, "token", None))
        return args.func(client, args)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except TaskRunError as e:
        print(safe(f"{PROG}: error: {e}"), file=sys.stderr)
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
