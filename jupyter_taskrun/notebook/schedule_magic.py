"""Schedules from a notebook: ``%taskrun schedule add|list|show|pause|resume|run|rm`` and ``%%taskrun --cron``.

The verbs, their options and the views are the CLI's (``jupyter_taskrun.cli_schedule``: one
definition of the arguments, so ``%taskrun schedule add nightly.ipynb --cron "0 3 * * *"`` means
what ``jupyter taskrun schedule add`` means); this module decides what a notebook shows. The
hooks in ``magics.py`` are ``schedule_cell_options`` (the ``--cron`` options of ``%%taskrun``),
``add_schedule_command`` (the ``schedule`` verb of ``%taskrun``), ``wants_schedule`` /
``schedule_cell`` and ``run_schedule_command``.

Guarantees:

* ``%%taskrun --cron CRON [--tz ZONE] [--name N] ...`` creates a schedule whose task is the cell
  (a ``code`` submission with the cell's other options, as ``%%taskrun`` would submit it now)
  instead of running it, and prints the schedule: name, the cron in words, the next runs.
  ``--as VAR`` binds the schedule JSON; ``--quiet`` prints nothing. Schedule options without
  ``--cron``, or with ``--wait``, are usage errors.
* In a task's own kernel (a notebook run as a task, e.g. by a schedule) ``%%taskrun --cron``
  creates nothing and says so on stderr: each run would otherwise add one more schedule.
* ``%taskrun schedule run`` makes the task the default of later ``%taskrun`` commands and shows
  its panel (``--json``: the task JSON instead; ``--wait``/``--follow``: waits, and a failure
  raises ``TaskFailedError``). Schedule references are ids, unique id prefixes or names.
* Refusals (the server's, a reference that matches nothing, a missing FILE) are short
  ``UsageError`` messages, no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import ArgDecorator

from ..cli_schedule import add_schedule_options, add_schedule_verbs, schedule_options
from ..progress import TASK_KERNEL_ENV

__all__ = ["SCHEDULE_USAGE", "add_schedule_command", "run_schedule_command", "schedule_cell", "schedule_cell_options", "wants_schedule"]

SCHEDULE_USAGE = (
    'usage: %taskrun schedule add FILE|--code CODE --cron "0 3 * * *" [--tz ZONE] [--name N] [--param k=v ...] ... '
    "| list | show ID | pause ID | resume ID | run ID [--wait] | rm ID"
)


class schedule_cell_options(ArgDecorator):  # lower case: a decorator, named like IPython's ``argument``
    """``@schedule_cell_options()`` on ``%%taskrun``: the CLI's schedule options, defined there once."""

    def add_to_parser(self, parser: Any, group: Any) -> None:
        add_schedule_options(parser, cron_required=False)


def add_schedule_command(sub: Any) -> None:
    """``schedule VERB ...`` on ``%taskrun``'s subcommands (a ``MagicArgumentParser``'s)."""
    p = sub.add_parser("schedule", help="tasks on a cron schedule")
    add_schedule_verbs(p.add_subparsers(dest="verb"))


def wants_schedule(args: Any) -> bool:
    """Whether ``%%taskrun``'s options ask for a schedule (``--cron`` or any other schedule option)."""
    return args.cron is not None or args.timezone is not None or bool(schedule_options(args))


# ---------------------------------------------------------------------------
# %%taskrun --cron
# ---------------------------------------------------------------------------


def schedule_cell(magics: Any, args: Any, cell: str, params: dict[str, Any], env: dict[str, str]) -> None:
    """Schedule the cell instead of running it (see the module docstring)."""
    if args.cron is None:
        raise UsageError('the schedule options need --cron, e.g. %%taskrun --cron "*/15 * * * *" --tz Europe/Berlin')
    if args.wait:
        raise UsageError("--wait runs the cell now; with --cron it runs at the schedule's times (%taskrun schedule run ID runs it now)")
    if os.environ.get(TASK_KERNEL_ENV):
        print("%%taskrun --cron: inside a task: no schedule is created (each run would add one)", file=sys.stderr, flush=True)
        return
    task = {"code": cell, **magics._cell_task_options(args, params, env)}
    schedule = magics._call(
        magics.client.create_schedule, task, args.cron, name=args.name, timezone=args.timezone, **schedule_options(args)
    )
    if args.var:
        magics.shell.user_ns[args.var] = schedule
    if not args.quiet:
        _print_summary(schedule)


def _print_summary(schedule: dict[str, Any]) -> None:
    from ..cli_schedule import schedule_summary

    print("\n".join(schedule_summary(schedule)))


# ---------------------------------------------------------------------------
# %taskrun schedule VERB
# ---------------------------------------------------------------------------


def _resolve(magics: Any, ref: str) -> dict[str, Any]:
    from ..client.resolve import TaskRefError, resolve_schedule

    try:
        return magics._call(resolve_schedule, magics.client, ref)
    except TaskRefError as e:
        raise UsageError(str(e)) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def run_schedule_command(magics: Any, args: Any) -> None:
    """``%taskrun schedule VERB ...`` (parsed by ``add_schedule_command``'s parser)."""
    from .. import cli
    from ..cli_schedule import deleted_line, history, new_schedule, schedule_lines, schedule_table

    verb = args.verb
    if verb is None:
        raise UsageError(SCHEDULE_USAGE)
    client = magics.client
    if verb == "add":
        if args.file is None and args.cwd is None:
            args.cwd = magics._default_cwd()  # code runs in this kernel's folder, as with %%taskrun
        try:
            schedule = magics._call(new_schedule, client, args)
        except cli.UsageError as e:
            raise UsageError(f"{e}\n{SCHEDULE_USAGE}") from None
        if args.json:
            _print_json(schedule)
        else:
            _print_summary(schedule)
    elif verb == "list":
        schedules = magics._call(client.list_schedules, args.owner)
        if args.json:
            _print_json(schedules)
        else:
            print("\n".join(schedule_table(schedules)) if schedules else "no schedules")
    elif verb == "show":
        schedule = _resolve(magics, args.id)
        if args.json:
            _print_json(schedule)
        else:
            print("\n".join(schedule_lines(schedule, magics._call(history, client, schedule["id"], args.history))))
    elif verb in ("pause", "resume", "rm"):
        for ref in args.ids:
            schedule = _resolve(magics, ref)
            if verb == "rm":
                magics._call(client.delete_schedule, schedule["id"])
                print(deleted_line(schedule))
                continue
            change = client.pause_schedule if verb == "pause" else client.resume_schedule
            _print_summary(magics._call(change, schedule["id"]))
    elif verb == "run":
        _run_now(magics, args)


def _run_now(magics: Any, args: Any) -> None:
    from .handle import TaskFailedError, TaskHandle

    schedule = _resolve(magics, args.id)
    task = magics._call(magics.client.run_schedule, schedule["id"])
    handle = TaskHandle(magics.client, task)
    magics.last = handle
    if args.json:
        _print_json(task)
    else:
        magics._show_panel(task)
    if args.wait or args.follow:
        final = magics._wait(handle)
        print(f"task {handle.id[:8]} ({final.get('name')}) {final.get('status')}")
        if final.get("status") != "completed":
            raise TaskFailedError(final)
