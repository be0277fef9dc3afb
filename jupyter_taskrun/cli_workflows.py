"""``jupyter taskrun submit-batch FILE [--follow]``: a workflow (a batch with keys and depends_on)
submitted in one all-or-nothing request, then followed in the terminal until every task's last
try has ended. HTTP only (the layering rule), like the rest of the CLI.

Guarantees: the file is refused before anything is sent if it is not JSON (a list of
submissions, or ``{"tasks": [...]}``); with ``--follow`` one line per status change of each entry
(named by its key, else its place) and a retry shows as the entry's next try; the exit code is 0
only if every entry's last try completed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .cli_render import safe, summary
from .client import TaskRunClient

PROG = "jupyter taskrun"
#: seconds between two looks at the workflow's tasks while following
POLL_INTERVAL = 0.25


def read_workflow(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{PROG}: error: cannot read {path}: {e}") from None
    entries = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SystemExit(f'{PROG}: error: {path} must hold a list of submissions or {{"tasks": [...]}}')
    return entries


def _label(entry: dict[str, Any], i: int) -> str:
    return str(entry.get("key") or f"tasks[{i}]")


def _line(label: str, task: dict[str, Any]) -> str:
    status = task.get("status", "?")
    extra = ""
    if status == "waiting" and task.get("waiting_for"):
        extra = " for " + ", ".join(str(t)[:8] for t in task["waiting_for"])
    elif status == "waiting" and task.get("not_before"):
        extra = f" to retry at {task['not_before']}"
    if task.get("retry"):
        extra += f" (retry {task['retry']})"
    if status in ("failed", "cancelled", "timed_out"):
        reason = (task.get("error") or {}).get("reason") or ""
        extra += f": {reason}" if reason else ""
    return safe(f"[{label}] {str(task.get('id'))[:8]} {status}{extra}")


def follow(client: TaskRunClient, entries: list[dict[str, Any]], tasks: list[dict[str, Any]], timeout: float | None = None) -> int:
    """Print each entry's status changes until all have ended (retries followed); the exit code."""
    labels = [_label(e, i) for i, e in enumerate(entries)]
    current = [t["id"] for t in tasks]
    shown: list[tuple[str, str] | None] = [None] * len(tasks)
    last: list[dict[str, Any]] = list(tasks)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = 0
        for i, task_id in enumerate(current):
            task = client.get(task_id)
            if task.get("retried_as"):  # superseded: follow the next try
                current[i] = task["retried_as"]
                task = client.get(current[i])
            last[i] = task
            state = (task["id"], task.get("status", "?"))
            if state != shown[i]:
                shown[i] = state
                print(_line(labels[i], task), flush=True)
            if task.get("status") in ("completed", "failed", "cancelled", "timed_out") and not task.get("retried_as"):
                done += 1
        if done == len(current):
            break
        if deadline is not None and time.monotonic() > deadline:
            print(f"{PROG}: the workflow did not end within {timeout:g} s; it goes on", file=sys.stderr)
            return 1
        time.sleep(POLL_INTERVAL)
    for label, task in zip(labels, last):
        print(safe(f"[{label}] {summary(task)}"), file=sys.stderr)
    return 0 if all(t.get("status") == "completed" for t in last) else 1


def cmd_submit_batch(client: TaskRunClient, args: argparse.Namespace) -> int:
    entries = read_workflow(args.file)
    tasks = client.submit_batch(entries)
    if args.json and not args.follow:
        print(json.dumps(tasks, indent=1))
        return 0
    for i, (entry, task) in enumerate(zip(entries, tasks)):
        print(safe(f"[{_label(entry, i)}] {task['id']} {task.get('status')}"), flush=True)
    return follow(client, entries, tasks, args.timeout) if args.follow else 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "submit a workflow: a JSON list of submissions with keys and depends_on, all or nothing"
    p = sub.add_parser("submit-batch", help=text, description=text, parents=[common])
    p.set_defaults(func=cmd_submit_batch)
    p.add_argument("file", metavar="FILE", help="the workflow's JSON: [submission, ...] or {\"tasks\": [...]} ('-': stdin)")
    p.add_argument("-f", "--follow", action="store_true", help="follow every task until all have ended (exit 1 unless all completed)")
    p.add_argument("--timeout", type=float, help="with --follow: stop following after this many seconds (exit 1)")
    p.add_argument("--json", action="store_true", help="print the created tasks as JSON")
