"""IPython magics: ``%%taskrun`` runs a cell as a background task, ``%taskrun`` manages tasks.

``%%taskrun --cron ...`` and ``%taskrun schedule ...`` (schedules) live in ``schedule_magic.py``.

Load with ``%load_ext jupyter_taskrun``. The magics are clients of the server's REST/SSE
API (``TaskRunClient``), so they see every task, whoever made it (REST, CLI, another
notebook). The server is found via ``JUPYTER_TASKRUN_URL``/``JUPYTER_TASKRUN_TOKEN`` or
the running server's runtime info; ``%taskrun connect URL --token T`` picks one by hand.
"""

from __future__ import annotations

import contextlib
import html
import json
import keyword
import os
import shlex
import sys
import weakref
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments

from ..progress import TASK_KERNEL_ENV
from .handle import RESULT_NAME, TaskFailedError, TaskHandle, VariableError, decode_result
from .schedule_magic import add_schedule_command, run_schedule_command, schedule_cell, schedule_cell_options, wants_schedule

__all__ = ["TaskFailedError", "TaskHandle", "TaskRunMagics", "VariableError", "load_ipython_extension", "parse_assignments"]

_TERMINAL = {"completed", "failed", "cancelled", "timed_out"}

CELL_USAGE = (
    "usage: %%taskrun [--name N] [--kernel K] [--timeout S] [--cell-timeout S] [--tag T ...] "
    "[--priority P] [--param k=v ...] [--env K=V ...] [--cwd DIR] [--in VAR ...] [--out VAR ...] [--outputs GLOB ...] "
    "[--inputs PATH ...] [--wait] [--quiet] [--as VAR] "
    '[--cron "*/15 * * * *" [--tz ZONE] ...: schedule the cell instead]'
)
LINE_USAGE = (
    "usage: %taskrun list [--status S] [--tag T] [--limit N] | show [ID] | logs [ID] [--stream S] | "
    "cancel [ID] | rerun [ID] | wait [ID] [--timeout S] | panel [ID] | connect [URL] [--token T] | "
    "schedule add|list|show|pause|resume|run|rm ..."
)


def parse_assignments(items: list[str], option: str, *, json_values: bool) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (values parsed as JSON when valid, if asked)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE, got {item!r}\n{CELL_USAGE}")
        if json_values:
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
        else:
            value = raw
        out[key] = value
    return out


def _split(line: str) -> list[str]:
    """Shell-like splitting with quotes removed: ``--param 'cfg={"a": 1}'`` is one argument."""
    try:
        return shlex.split(line, posix=True)
    except ValueError as e:  # unbalanced quotes
        raise UsageError(f"cannot parse the options: {e}") from None


def _flatten(groups: list[list[str]] | None) -> list[str]:
    return [x for group in groups or [] for x in group]


def _http_message(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)


@magics_class
class TaskRunMagics(Magics):
    """``%%taskrun`` and ``%taskrun``."""

    def __init__(self, shell: Any = None, client: Any = None):
        super().__init__(shell)
        self._client = client
        #: the last task submitted from this kernel (the default ID of ``%taskrun`` commands)
        self.last: TaskHandle | None = None
        #: panels shown by the magics (weak: closed widgets go away)
        self.panels: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- server ------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..client import ServerNotFound, TaskRunClient

            try:
                self._client = TaskRunClient()
            except ServerNotFound as e:
                raise UsageError(str(e)) from None
        return self._client

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; server refusals and connection problems become short UsageErrors."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError

        try:
            return fn(*args, **kwargs)
        except TaskRunHTTPError as e:
            raise UsageError(f"the server refused: {_http_message(e)} (HTTP {e.status})") from None
        except TaskRunConnectionError as e:
            raise UsageError(str(e)) from None

    def _default_cwd(self) -> str | None:
        """The kernel's working folder relative to the server root (so relative paths match)."""
        try:
            root = self.client.server_root
            cwd = os.getcwd()
        except (OSError, AttributeError):
            return None
        if not root:
            return None
        try:
            rel = os.path.relpath(os.path.realpath(cwd), os.path.realpath(root))
        except ValueError:
            return None
        if rel == "." or rel.startswith(".."):
            return None
        return rel.replace(os.sep, "/")

    # -- %%taskrun -------------------------------------------------------------------

    @magic_arguments()
    @argument("--name", "-n", help="task name (default: the cell's first line)")
    @argument("--kernel", "-k", help="kernel name for the task (default: the server's default)")
    @argument("--timeout", "-t", type=float, help="whole-task timeout in seconds")
    @argument("--cell-timeout", type=float, help="per-cell timeout in seconds")
    @argument("--tag", action="append", nargs="+", metavar="T", help="tags (repeatable)")
    @argument("--priority", "-p", type=int, help="queue priority, higher runs first (-1000..1000)")
    @argument("--param", action="append", nargs="+", metavar="K=V", help="parameters, values parsed as JSON when valid")
    @argument("--env", action="append", nargs="+", metavar="K=V", help="environment variables for the task kernel")
    @argument("--cwd", help="working folder of the task, relative to the server root (default: this kernel's)")
    @argument("--in", dest="vars_in", action="append", nargs="+", metavar="VAR", help="notebook variables sent into the task (pickled)")
    @argument("--out", dest="vars_out", action="append", nargs="+", metavar="VAR", help="task variables sent back when it completes")
    @argument("--outputs", action="append", nargs="+", metavar="GLOB", help="files the task writes, kept when it ends (repeatable)")
    @argument("--inputs", action="append", nargs="+", metavar="PATH", help="files or folders the task reads (repeatable)")
    @argument("--wait", "-w", action="store_true", help="block until the task ends; raise TaskFailedError if it fails")
    @argument("--quiet", "-q", action="store_true", help="do not show the task panel")
    @argument("--as", dest="var", metavar="VAR", help="bind a TaskHandle (with --cron: the schedule) to this variable")
    @schedule_cell_options()  # --cron, --tz, ...: schedule the cell instead of running it (schedule_magic.py)
    @cell_magic("taskrun")  # type: ignore[arg-type]  # IPython's decorators are untyped
    def taskrun_cell(self, line: str, cell: str) -> None:
        """Run this cell as a background task in a fresh kernel and show a live panel.

        The notebook stays usable while the task runs. With ``--wait`` the cell blocks until
        the task ends and a failure is raised as ``TaskFailedError`` naming the task.
        ``--as h`` binds a ``TaskHandle``: ``h.status``, ``h.wait()``, ``h.logs()``,
        ``h.outputs()``, ``h.cancel()``, ``h.result`` (the last expression's value).
        ``--in df cfg`` sends notebook variables into the task (pickled with cloudpickle, restored
        before the cell runs); ``--out model scores`` names variables the task sends back when it
        completes: with ``--wait`` they are assigned here at the end, else ``h.pull()`` assigns them
        and ``h.get("model")`` returns one (``h.get()``: the last expression's object).
        ``--outputs 'results/*.csv'`` keeps files the task writes (``GET …/files``), ``--inputs data/``
        names files it reads (both repeatable).
        With ``--cron "*/15 * * * *"`` (and ``--tz``, ``--overlap``, ...) the cell is not run but
        scheduled: it runs as a task at those times (``%taskrun schedule list`` shows them).
        """
        try:
            args = self.taskrun_cell.parser.parse_args(_split(line))
        except UsageError as e:
            raise UsageError(f"{e}\n{CELL_USAGE}") from None
        if not cell.strip():
            raise UsageError("%%taskrun: the cell is empty, nothing to run")
        if args.var is not None and not args.var.isidentifier():
            raise UsageError(f"--as needs a Python variable name, not {args.var!r}")
        params = parse_assignments(_flatten(args.param), "--param", json_values=True)
        env = parse_assignments(_flatten(args.env), "--env", json_values=False)
        vars_in, vars_out = _flatten(args.vars_in), _flatten(args.vars_out)
        for option, names in (("--in", vars_in), ("--out", vars_out)):
            bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n)]
            if bad:
                raise UsageError(f"{option} needs Python variable names, not {bad[0]!r}")
        if wants_schedule(args):
            if vars_in or vars_out:
                raise UsageError("--in/--out are for a cell run now, not for a --cron schedule")
            schedule_cell(self, args, cell, params, env)
            return
        if os.environ.get(TASK_KERNEL_ENV):
            self._run_inline(cell, params)  # the same kernel: --in/--out variables are already here
            return
        options = self._cell_task_options(args, params, env)
        payloads, sizes = self._pickle_inputs(vars_in)
        options["variables_in"] = payloads or None
        options["variables_out"] = [*dict.fromkeys(vars_out), RESULT_NAME]  # RESULT_NAME: for h.get()
        task = self._submit_with_variables(cell, options, sizes)
        handle = TaskHandle(self.client, task)
        self.last = handle
        if args.var:
            assert self.shell is not None  # a registered magic always has its shell
            self.shell.user_ns[args.var] = handle
        panel = None if args.quiet else self._show_panel(task)
        if args.wait:
            final = self._wait(handle)
            if final.get("status") != "completed":
                # with the panel shown, its error view already has the traceback: not twice
                raise TaskFailedError(final, show_remote_traceback=args.quiet)
            if vars_out:
                names = self._call(handle.pull, vars_out, namespace=self.shell.user_ns if self.shell is not None else None)
                if panel is not None:
                    panel.note_loaded(names)

    def _pickle_inputs(self, names: list[str]) -> tuple[dict[str, str], dict[str, int]]:
        """``--in`` variables, pickled here with cloudpickle (base64 for JSON), and their sizes;
        a ``VariableError`` naming the variable when one is missing or cannot be pickled."""
        if not names:
            return {}, {}
        import base64

        try:
            import cloudpickle
        except ImportError:
            raise VariableError(
                "--in pickles variables with cloudpickle, which this kernel cannot import (pip install cloudpickle)"
            ) from None
        assert self.shell is not None  # a registered magic always has its shell
        ns = self.shell.user_ns
        payloads: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for name in dict.fromkeys(names):
            if name not in ns:
                raise VariableError(f"--in {name}: there is no variable {name!r} in this notebook", errors={name: "not defined"})
            value = ns[name]
            try:
                data = cloudpickle.dumps(value)
            except Exception as e:
                kind = f"{type(value).__module__}.{type(value).__qualname__}"
                reason = f"cannot pickle {name!r} ({kind}): {type(e).__name__}: {e}"
                raise VariableError(f"--in {name}: {reason}", errors={name: reason}) from None
            sizes[name] = len(data)
            payloads[name] = base64.b64encode(data).decode("ascii")
        return payloads, sizes

    def _submit_with_variables(self, cell: str, options: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
        """Submit (refusals become UsageErrors, as ``_call`` makes them); a body too large because
        of ``--in`` variables says which they are and how big."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError
        from ..formatting import format_bytes

        try:
            return self.client.submit(cell, **options)
        except TaskRunHTTPError as e:
            message = f"the server refused: {_http_message(e)} (HTTP {e.status})"
            if e.status == 400 and "'variables_in" in _http_message(e):
                # the message names the variable and the reason (not a pickle, over the cap, ...)
                raise VariableError(f"--in: {message}") from None
            if e.status == 413 and sizes:
                listed = ", ".join(f"{n} ({format_bytes(b)} pickled)" for n, b in sizes.items())
                message += f"; the --in variables travel in the request: {listed} (c.TaskRun.max_request_bytes bounds it)"
            raise UsageError(message) from None
        except TaskRunConnectionError as e:
            raise UsageError(str(e)) from None

    def _cell_task_options(self, args: Any, params: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        """The submission options of a ``%%taskrun`` cell (also a ``--cron`` schedule's task)."""
        return {
            "name": args.name,
            "kernel_name": args.kernel,
            "timeout": args.timeout,
            "cell_timeout": args.cell_timeout,
            "tags": _flatten(args.tag) or None,
            "priority": args.priority,
            "parameters": params or None,
            "env": env or None,
            "cwd": args.cwd if args.cwd is not None else self._default_cwd(),
            "outputs": _flatten(args.outputs) or None,
            "inputs": _flatten(args.inputs) or None,
        }

    def _run_inline(self, cell: str, params: dict[str, Any]) -> None:
        """Inside a task's own kernel (a notebook that uses ``%%taskrun``, run as a task): run the
        cell here, as part of that task. A child task would outlive its parent, which would report
        "completed" while its children still ran, and a cancel would not reach them; inline, the
        parent's status, logs, timeout and cancel cover the cell. The note goes to the task's log."""
        import ast

        from IPython.display import display

        print("%%taskrun: already inside a task: this cell runs inline, as part of it", file=sys.stderr, flush=True)
        shell = self.shell
        assert shell is not None  # a registered magic always has its shell
        ns = shell.user_ns
        ns.update(params)
        tree = ast.parse(shell.transform_cell(cell), "<%%taskrun inline>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<%%taskrun inline>", "exec"), ns)  # noqa: S102 - the user's own cell
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<%%taskrun inline>", "eval"), ns)  # noqa: S307
            if value is not None:
                display(value)

    def _show_panel(self, task: dict[str, Any]) -> Any:
        from IPython.display import display

        from .panel import TaskPanel

        panel = TaskPanel(self.client, task["id"], task=task)
        self.panels.add(panel)
        display(panel)
        return panel

    def _wait(self, handle: TaskHandle, timeout: float | None = None) -> dict[str, Any]:
        try:
            return self._call(handle.wait, timeout)
        except KeyboardInterrupt:
            print(
                f"stopped waiting: task {handle.id[:8]} keeps running (%taskrun cancel {handle.id[:8]} stops it)",
                file=sys.stderr,
            )
            raise
        except TimeoutError as e:
            raise UsageError(f"task {handle.id[:8]} did not finish in time: {e}") from None

    # -- %taskrun ----------------------------------------------------------------------

    def _line_parser(self) -> MagicArgumentParser:
        parser = MagicArgumentParser(prog="%taskrun", description="Manage jupyter_taskrun tasks.")
        sub = parser.add_subparsers(dest="command", parser_class=MagicArgumentParser)
        p = sub.add_parser("list", help="recent tasks")
        p.add_argument("--status", "-s")
        p.add_argument("--tag")
        p.add_argument("--name")
        p.add_argument("--limit", "-l", type=int, default=20)
        for name in ("show", "cancel", "rerun", "panel"):
            p = sub.add_parser(name)
            p.add_argument("id", nargs="?")
        p = sub.add_parser("logs")
        p.add_argument("id", nargs="?")
        p.add_argument("--stream", choices=["stdout", "stderr"])
        p.add_argument("--tail", type=int, help="only the last N lines")
        p = sub.add_parser("wait")
        p.add_argument("id", nargs="?")
        p.add_argument("--timeout", "-t", type=float)
        p = sub.add_parser("connect")
        p.add_argument("url", nargs="?")
        p.add_argument("--token")
        add_schedule_command(sub)
        return parser

    @line_magic("taskrun")  # type: ignore[arg-type]  # IPython's decorators are untyped
    def taskrun_line(self, line: str) -> Any:
        """Manage tasks made anywhere (REST, CLI, other notebooks).

        ``%taskrun list [--status S] [--tag T] [--limit N]``, ``%taskrun show ID``,
        ``%taskrun logs ID [--stream stderr] [--tail N]``, ``%taskrun cancel ID``,
        ``%taskrun rerun ID``, ``%taskrun wait ID``, ``%taskrun panel [ID]`` (no ID: the
        live task list), ``%taskrun connect URL --token T``. ID may be a unique prefix or
        a task name; omitted, it is the last task ``%%taskrun`` submitted here.
        ``%taskrun schedule add|list|show|pause|resume|run|rm ...``: schedules, with the verbs
        and options of ``jupyter taskrun schedule``.
        """
        if not line.strip():
            raise UsageError(LINE_USAGE)
        try:
            args = self._line_parser().parse_args(_split(line))
        except UsageError as e:
            raise UsageError(f"{e}\n{LINE_USAGE}") from None
        command = args.command
        if command is None:
            raise UsageError(LINE_USAGE)
        if command == "connect":
            return self._connect(args.url, args.token)
        if command == "schedule":
            return run_schedule_command(self, args)
        if command == "list":
            return self._list(args)
        if command == "panel" and args.id is None:
            from IPython.display import display

            from .panel import TaskListPanel

            panel = self._call(TaskListPanel, self.client)
            self.panels.add(panel)
            display(panel)
            return None
        handle = self._resolve(args.id)
        if command == "show":
            self._show(handle)
        elif command == "logs":
            text = self._call(handle.logs, args.stream)
            if args.tail:
                text = "\n".join(text.splitlines()[-args.tail :])
            print(text, end="" if text.endswith("\n") else "\n")
        elif command == "cancel":
            task = self._call(handle.cancel)
            print(f"task {handle.id[:8]} ({task.get('name')}): cancellation requested, now {task.get('status')}")
        elif command == "rerun":
            new = self._call(handle.rerun)
            self.last = new
            self._show_panel(new.task)
        elif command == "wait":
            final = self._wait(handle, args.timeout)
            print(f"task {handle.id[:8]} ({final.get('name')}) {final.get('status')}")
            if final.get("status") != "completed":
                raise TaskFailedError(final)
        elif command == "panel":
            self._show_panel(self._call(lambda: handle.task))
        return None

    # -- helpers of %taskrun -------------------------------------------------------

    def _connect(self, url: str | None, token: str | None) -> None:
        from ..client import TaskRunClient

        try:
            self._client = TaskRunClient(url, token)
            status = self._client.status()
        except Exception as e:  # noqa: BLE001 - a short message, not a traceback
            self._client = None
            raise UsageError(f"cannot connect: {_http_message(e)}") from None
        print(
            f"connected to {self._client.url} (jupyter_taskrun {status.get('version')}, "
            f"{status.get('running')} running, {status.get('queued')} queued)"
        )

    def _resolve(self, ref: str | None) -> TaskHandle:
        """A task id, a unique id prefix or a task name (newest wins) → handle; no ref: the last task.

        The rules are the CLI's too: ``jupyter_taskrun.client.resolve.resolve_task``."""
        from ..client.resolve import TaskRefError, resolve_task

        if ref is None:
            if self.last is None:
                raise UsageError("give a task ID (no task was submitted from this notebook yet)")
            return self.last
        try:
            return TaskHandle(self.client, self._call(resolve_task, self.client, ref))
        except TaskRefError as e:
            raise UsageError(str(e)) from None

    def _list(self, args: Any) -> None:
        from IPython.display import display

        page = self._call(self.client.list, status=args.status, tag=args.tag, name=args.name, limit=args.limit)
        tasks = page.get("tasks", [])
        if not tasks:
            print("no tasks")
            return
        from ..formatting import format_duration
        from .panel_model import parse_time
        from .panel_view import badge_html

        text_rows = []
        html_rows = []
        for t in tasks:
            p = t.get("progress") or {}
            prog = ""
            if p.get("total"):
                prog = f"{100 * float(p.get('value') or 0) / float(p['total']):.0f}%"
            elif p:
                prog = str(p.get("value"))
            started, finished = parse_time(t.get("started_at")), parse_time(t.get("finished_at"))
            dur = format_duration(finished - started) if started and finished else ""
            text_rows.append(f"{t['id'][:8]}  {t['status']:<10} {prog:>5}  {dur:>9}  {t.get('name', '')}")
            html_rows.append(
                f"<tr><td><code>{t['id'][:8]}</code></td><td>{badge_html(t['status'])}</td><td>{html.escape(prog)}</td>"
                f"<td>{html.escape(dur)}</td><td>{html.escape(str(t.get('name', '')))}</td>"
                f"<td>{html.escape(str(t.get('created_at') or '')[:19].replace('T', ' '))}</td></tr>"
            )
        head = "id        status      prog   duration  name"
        heads = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("id", "status", "progress", "duration", "name", "created (UTC)"))
        display(
            {
                "text/plain": "\n".join([head, *text_rows]),
                "text/html": f"<table class='taskrun-list'><thead><tr>{heads}</tr></thead><tbody>{''.join(html_rows)}</tbody></table>",
            },
            raw=True,
        )

    def _show(self, handle: TaskHandle) -> None:
        t = self._call(lambda: handle.task)
        from ..formatting import format_bytes, format_duration

        lines = [
            f"task      {t['id']}",
            f"name      {t.get('name')}",
            f"status    {t.get('status')}" + (f" (#{t['queue_position']} in queue)" if t.get("queue_position") else ""),
            f"kernel    {t.get('kernel_name')}   owner {t.get('owner') or '-'}   tags {', '.join(t.get('tags') or []) or '-'}",
            f"created   {t.get('created_at')}",
            f"started   {t.get('started_at') or '-'}",
            f"finished  {t.get('finished_at') or '-'}",
        ]
        p = t.get("progress")
        if p:
            total = f"/{p['total']}" if p.get("total") is not None else ""
            lines.append(f"progress  {p.get('value')}{total} {p.get('message') or ''}".rstrip())
        m = t.get("metrics") or {}
        if m:
            cpu = (m.get("cpu_user") or 0) + (m.get("cpu_system") or 0)
            lines.append(
                f"metrics   wall {format_duration(m.get('wall'))}, cpu {format_duration(cpu)}, "
                f"peak memory {format_bytes(m.get('peak_rss'))}, kernel start {format_duration(m.get('kernel_start'))}"
            )
        if t.get("result"):
            lines.append(f"result    {decode_result(t['result'])!r}")
        err = t.get("error")
        if err:
            lines.append(f"error     {err.get('ename')}: {err.get('evalue')}")
            if err.get("reason") and err.get("reason") != err.get("evalue"):
                lines.append(f"reason    {err.get('reason')}")
        print("\n".join(lines))
        if err and err.get("traceback"):
            print("\n".join(err["traceback"]), file=sys.stderr)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_taskrun``"""
    ipython.register_magics(TaskRunMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("TaskRunMagics", None)
    if magics is not None:
        for panel in list(magics.panels):
            with contextlib.suppress(Exception):
                panel.close()
        ipython.magics_manager.magics["line"].pop("taskrun", None)
        ipython.magics_manager.magics["cell"].pop("taskrun", None)
