"""``jupyter taskrun schedule add|list|show|pause|resume|run|rm`` — tasks that run on a cron schedule.

This module holds the one definition of the schedule commands' arguments, used by the CLI and by
``%taskrun schedule`` / ``%%taskrun --cron`` (``notebook/schedule_magic.py``), so both front ends
take the same verbs and options and build the same request:

* ``add_schedule_options`` — when and how a schedule fires (``--cron``, ``--tz``, ``--overlap``,
  ``--catch-up``, ``--callback-url``, ``--paused``, ``--start-at``, ``--end-at``, ``--max-runs``);
  ``schedule_options`` turns them into the API's fields (unset ones left out, so the server's
  defaults apply);
* ``add_schedule_verbs`` — the verbs and their arguments; ``schedule add`` takes what ``submit``
  takes (``cli.add_task_options``: FILE or ``-c CODE``, ``--name``, ``--param``, ...);
* pure views: ``schedule_table`` (``list``), ``schedule_lines`` (``show``), ``schedule_summary``
  (what ``add``/``resume`` report); times are shown in the schedule's own zone, as the server
  sends them; every text from the server goes through ``cli_render.safe``.

Schedule references (``show``, ``pause``, ...) are what task references are: a full id, a unique id
prefix or a name (``client.resolve.resolve_schedule``). The server validates everything; a bad
cron or time zone is its 400, printed as one line naming the field (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .cli import _after_submit, _each, add_task_options, task_submission
from .cli_render import fmt_time, list_lines, parse_time, safe
from .client import TaskRunClient
from .client.resolve import resolve_schedule

OVERLAP = ("skip", "queue", "cancel_previous")
CATCH_UP = ("skip", "run_once")
#: tasks of a schedule's history that ``show`` lists by default
HISTORY = 10


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# ---------------------------------------------------------------------------
# Arguments: the one definition (CLI and magics)
# ---------------------------------------------------------------------------


def add_schedule_options(p: argparse.ArgumentParser, *, cron_required: bool) -> None:
    """When and how a schedule fires (``schedule add``, and ``%%taskrun --cron``)."""
    p.add_argument("--cron", required=cron_required, metavar="CRON", help='5 cron fields ("0 3 * * *") or @hourly, @daily, @weekly, ...')
    p.add_argument(
        "--tz", "--timezone", dest="timezone", metavar="ZONE", help="IANA time zone of the cron, e.g. Europe/Berlin (default: the server's)"
    )
    p.add_argument(
        "--overlap", choices=OVERLAP, help="if the previous run is still going: skip this one (default), queue it, or cancel_previous"
    )
    p.add_argument("--catch-up", choices=CATCH_UP, help="runs missed while the server was down: skip (default) or run_once")
    p.add_argument("--callback-url", metavar="URL", help="the server POSTs each finished run's outcome here")
    p.add_argument("--paused", action="store_true", help="create it paused (resume starts it)")
    p.add_argument("--start-at", metavar="ISO", help="no run before this time (ISO 8601)")
    p.add_argument("--end-at", metavar="ISO", help="no run after this time (ISO 8601)")
    p.add_argument("--max-runs", type=_positive_int, metavar="N", help="stop after N runs")


def schedule_options(args: argparse.Namespace) -> dict[str, Any]:
    """The schedule fields ``add_schedule_options`` set, as the API names them (unset: left out)."""
    fields = {
        "overlap": args.overlap,
        "catch_up": args.catch_up,
        "callback_url": args.callback_url,
        "enabled": False if args.paused else None,
        "start_at": args.start_at,
        "end_at": args.end_at,
        "max_runs": args.max_runs,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _add_ref(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    help_text = "a schedule id, a unique id prefix or a schedule name"
    if several:
        p.add_argument("ids", nargs="+", metavar="SCHEDULE", help=help_text)
    else:
        p.add_argument("id", metavar="SCHEDULE", help=help_text)


def _add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def add_schedule_verbs(verbs: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> dict[str, argparse.ArgumentParser]:
    """The schedule verbs on ``verbs`` (an ``add_subparsers()`` object); returns the parser of each."""

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_text, description=help_text, parents=list(parents))

    parsers: dict[str, argparse.ArgumentParser] = {}
    p = parsers["add"] = verb("add", "run a .py/.ipynb file or a snippet of code on a cron schedule")
    p.epilog = '--name names the schedule and its tasks (default: FILE\'s name). e.g. schedule add nightly.ipynb --cron "0 3 * * *" --tz Europe/Berlin --param day=today'
    add_task_options(p)
    add_schedule_options(p, cron_required=True)
    _add_json(p, "the created schedule")
    p = parsers["list"] = verb("list", "list schedules, newest first")
    p.add_argument("--owner", help="only this owner's schedules (admins)")
    _add_json(p, "the schedules")
    p = parsers["show"] = verb("show", "show a schedule: its next runs and the tasks it made")
    _add_ref(p)
    p.add_argument("--history", type=int, default=HISTORY, metavar="N", help=f"how many of its tasks to list (default {HISTORY})")
    _add_json(p, "the schedule")
    _add_ref(parsers.setdefault("pause", verb("pause", "pause schedules (no runs until resumed)")), several=True)
    _add_ref(parsers.setdefault("resume", verb("resume", "resume paused schedules")), several=True)
    p = parsers["run"] = verb("run", "run a schedule's task now, whatever its overlap policy says")
    _add_ref(p)
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it completed")
    p.add_argument("--follow", action="store_true", help="print logs and progress live until the end; exit 1 unless it completed")
    _add_json(p, "the created task")
    _add_ref(parsers.setdefault("rm", verb("rm", "delete schedules (the tasks they made are kept)")), several=True)
    return parsers


# ---------------------------------------------------------------------------
# Views (pure: schedules in, lines out)
# ---------------------------------------------------------------------------


def when(value: str | None) -> str:
    """``2026-12-03 03:00+01:00``: a run time in the zone the server gave it in."""
    parsed = parse_time(value)
    return "-" if parsed is None else parsed.isoformat(sep=" ", timespec="minutes")


def _label(schedule: dict[str, Any]) -> str:
    name = schedule.get("name")
    return f"schedule {schedule.get('id')}" + (f" {name!r}" if name else "")


def schedule_summary(schedule: dict[str, Any]) -> list[str]:
    """Two lines: which schedule, what it does in words (or that it is paused), its next runs."""
    state = "" if schedule.get("enabled", True) else " (paused)"
    runs = schedule.get("next_runs") or []
    next_line = "next runs: " + ", ".join(when(t) for t in runs) if runs else "next runs: none"
    return [safe(f"{_label(schedule)}: {schedule.get('description') or schedule.get('cron')}{state}"), safe(next_line)]


def deleted_line(schedule: dict[str, Any]) -> str:
    return safe(f"{_label(schedule)}: deleted (the tasks it made are kept)")


def schedule_table(schedules: list[dict[str, Any]]) -> list[str]:
    """One row per schedule: id (a prefix that resolves), name, the cron in words, next run, last status."""
    rows: list[tuple[str, ...]] = [("ID", "NAME", "SCHEDULE", "NEXT RUN", "LAST", "ENABLED")]
    for s in schedules:
        runs = s.get("next_runs") or []
        last = s.get("last_run") or {}
        rows.append(
            (
                str(s.get("id", ""))[:12],
                str(s.get("name") or "")[:40],
                str(s.get("description") or s.get("cron") or ""),
                when(runs[0]) if runs else "-",
                str(last.get("status") or "-"),
                "yes" if s.get("enabled", True) else "no",
            )
        )
    rows = [tuple(safe(cell) for cell in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def task_description(task: dict[str, Any]) -> str:
    """What a schedule runs, in one line: ``path nightly.ipynb, parameters day="today", kernel python3``."""
    if task.get("path"):
        parts = [f"path {task['path']}"]
    elif task.get("code") is not None:
        lines = len(str(task["code"]).splitlines())
        parts = [f"code ({lines} line{'' if lines == 1 else 's'})"]
    elif task.get("cells") is not None:
        parts = [f"{len(task['cells'])} cells"]
    elif task.get("notebook") is not None:
        parts = [f"notebook ({len((task['notebook'] or {}).get('cells') or [])} cells)"]
    else:
        parts = ["?"]
    params = task.get("parameters") or {}
    if params:
        parts.append("parameters " + " ".join(f"{k}={json.dumps(v)}" for k, v in params.items()))
    for key, label in (("name", "task name"), ("kernel_name", "kernel"), ("cwd", "cwd"), ("timeout", "timeout")):
        if task.get(key) is not None:
            parts.append(f"{label} {task[key]}")
    if task.get("tags"):
        parts.append("tags " + ",".join(task["tags"]))
    return ", ".join(parts)


def _last_run(last: dict[str, Any]) -> str:
    fired_for = last.get("scheduled_for")
    why = f"for {when(fired_for)}" if fired_for else f"run now, {fmt_time(last.get('created_at'))}"
    return f"{last.get('task_id')} {last.get('status')} ({why})"


def schedule_lines(schedule: dict[str, Any], history: list[dict[str, Any]] | None = None) -> list[str]:
    """``key: value`` lines (the next runs one per line), then the tasks it made, newest first."""
    last = schedule.get("last_run")
    counts = schedule.get("counts") or {}
    runs = str(schedule.get("run_count", 0))
    if counts:
        runs += " (" + ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) + ")"
    fields: list[tuple[str, Any]] = [
        ("id", schedule.get("id")),
        ("name", schedule.get("name")),
        ("owner", schedule.get("owner")),
        ("schedule", schedule.get("description")),
        ("cron", f"{schedule.get('cron')} ({schedule.get('timezone')})"),
        ("enabled", "yes" if schedule.get("enabled", True) else "no (paused)"),
        ("task", task_description(schedule.get("task") or {})),
        ("overlap", schedule.get("overlap")),
        ("catch up", schedule.get("catch_up")),
        ("start at", when(schedule.get("start_at")) if schedule.get("start_at") else None),
        ("end at", when(schedule.get("end_at")) if schedule.get("end_at") else None),
        ("max runs", schedule.get("max_runs")),
        ("callback", schedule.get("callback_url")),
        ("runs", runs),
        ("last run", _last_run(last) if last else None),
        ("created", fmt_time(schedule.get("created_at"))),
        ("updated", fmt_time(schedule.get("updated_at"))),
    ]
    next_runs = [when(t) for t in schedule.get("next_runs") or []] or ["none"]
    fields.append(("next runs", next_runs[0]))
    fields += [("", t) for t in next_runs[1:]]
    width = max(len(k) for k, _ in fields) + 1
    lines = []
    for key, value in fields:
        value = "-" if value is None or value == "" else safe(value)
        lines.append(f"{(key + ':') if key else '':<{width}} {value}")
    if history is not None:
        lines += ["", "history (newest first):" if history else "history: no tasks yet"]
        if history:
            lines += ["  " + line for line in list_lines(history)]
    return lines


# ---------------------------------------------------------------------------
# CLI commands
# ---------------------------------------------------------------------------


def new_schedule(client: TaskRunClient, args: argparse.Namespace, task: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create the schedule ``add``'s arguments describe (``task``: the submission, else from FILE / --code)."""
    task = task_submission(client, args) if task is None else task
    name = args.name or task.get("name")
    return client.create_schedule(task, args.cron, name=name, timezone=args.timezone, **schedule_options(args))


def history(client: TaskRunClient, schedule_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` tasks the schedule made (``GET /tasks?schedule=ID``)."""
    if limit <= 0:
        return []
    return client.list(limit=limit, schedule=schedule_id).get("tasks", [])


def cmd_add(client: TaskRunClient, args: argparse.Namespace) -> int:
    schedule = new_schedule(client, args)
    if args.json:
        print(json.dumps(schedule, indent=2))
        return 0
    print(schedule["id"], flush=True)
    for line in schedule_summary(schedule):
        print(f"taskrun: {line}", file=sys.stderr)
    return 0


def cmd_list(client: TaskRunClient, args: argparse.Namespace) -> int:
    schedules = client.list_schedules(args.owner)
    if args.json:
        print(json.dumps(schedules, indent=2))
    elif not schedules:
        print("no schedules", file=sys.stderr)
    else:
        print("\n".join(schedule_table(schedules)))
    return 0


def cmd_show(client: TaskRunClient, args: argparse.Namespace) -> int:
    schedule = resolve_schedule(client, args.id)
    if args.json:
        print(json.dumps(schedule, indent=2))
        return 0
    print("\n".join(schedule_lines(schedule, history(client, schedule["id"], args.history))))
    return 0


def _set_enabled(client: TaskRunClient, args: argparse.Namespace, enabled: bool) -> int:
    def change(ref: str) -> None:
        schedule_id = resolve_schedule(client, ref)["id"]
        schedule = client.resume_schedule(schedule_id) if enabled else client.pause_schedule(schedule_id)
        print("\n".join(schedule_summary(schedule)))

    return _each(args.ids, change)


def cmd_pause(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _set_enabled(client, args, False)


def cmd_resume(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _set_enabled(client, args, True)


def cmd_run(client: TaskRunClient, args: argparse.Namespace) -> int:
    return _after_submit(client, client.run_schedule(resolve_schedule(client, args.id)["id"]), args)


def cmd_rm(client: TaskRunClient, args: argparse.Namespace) -> int:
    def rm(ref: str) -> None:
        schedule = resolve_schedule(client, ref)
        client.delete_schedule(schedule["id"])
        print(deleted_line(schedule))

    return _each(args.ids, rm)


COMMANDS = {"add": cmd_add, "list": cmd_list, "show": cmd_show, "pause": cmd_pause, "resume": cmd_resume, "run": cmd_run, "rm": cmd_rm}


def add_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """``jupyter taskrun schedule VERB ...`` on the CLI's subcommands (``common``: --url, --token)."""
    help_text = "run tasks on a cron schedule: add, list, show, pause, resume, run, rm"
    p = sub.add_parser("schedule", help=help_text, description=help_text, parents=[common])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    for name, parser in add_schedule_verbs(verbs, [common]).items():
        parser.set_defaults(func=COMMANDS[name])
