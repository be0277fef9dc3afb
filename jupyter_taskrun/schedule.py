"""A schedule: a stored task template plus when to run it (the model the routes, CLI and views share).

``parse_schedule`` checks untrusted JSON field by field and raises ``InvalidSubmission`` naming the
field; it never stores anything. The task template is checked by the caller (the server checks it
exactly as ``POST /tasks`` would), so a schedule can only ever make tasks the server accepts.
Times are epoch seconds inside, ISO 8601 outside (``to_dict``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .cron import check_cron, check_timezone, describe
from .errors import InvalidSubmission
from .models import MAX_NAME_LEN, isotime

#: what happens at a firing while the schedule's previous run is still queued or running
OVERLAP_POLICIES = ("skip", "queue", "cancel_previous")
#: what happens to firings missed while the server was down (or its clock jumped)
CATCH_UP_POLICIES = ("skip", "run_once")

#: every field a client may set (POST takes them all, PATCH any subset)
FIELDS = ("name", "task", "cron", "timezone", "enabled", "start_at", "end_at", "max_runs", "overlap", "catch_up", "callback_url")
MAX_RUNS_LIMIT = 10**9
MAX_URL_LEN = 2048


@dataclass
class Schedule:
    id: str
    owner: str
    name: str
    task: dict[str, Any]
    cron: str
    timezone: str
    enabled: bool = True
    start_at: float | None = None
    end_at: float | None = None
    max_runs: int | None = None
    overlap: str = "skip"
    catch_up: str = "skip"
    callback_url: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # -- firing state (the scheduler's; stored with the schedule, changed in the firing's transaction)
    #: the next cron time to fire for (epoch); None while paused, or once ended
    next_fire_at: float | None = None
    #: the cron time of the last firing (epoch): a restart never fires it again
    last_fired_for: float | None = None
    #: an ``overlap: queue`` firing held until the previous run ends (epoch cron time)
    pending_for: float | None = None
    run_count: int = 0  # tasks made: firings + run now
    fire_count: int = 0  # firings only: what max_runs counts
    skip_count: int = 0  # firings skipped (overlap: skip, or missed with catch_up: skip)
    #: why the last firing made no task (the server refused the template), until one succeeds
    last_error: str | None = None

    def spec(self) -> dict[str, Any]:
        """The client-set fields (what the store keeps as JSON)."""
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def description(self) -> str:
        return describe(self.cron, self.timezone)

    @property
    def ended(self) -> bool:
        if self.max_runs is not None and self.fire_count >= self.max_runs:
            return True
        return self.end_at is not None and time.time() > self.end_at

    def to_dict(self) -> dict[str, Any]:
        """The stored part of the schedule's JSON (the server adds next_runs, last_run, counts)."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "task": self.task,
            "cron": self.cron,
            "timezone": self.timezone,
            "description": self.description,
            "enabled": self.enabled,
            "start_at": isotime(self.start_at),
            "end_at": isotime(self.end_at),
            "max_runs": self.max_runs,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
            "callback_url": self.callback_url,
            "created_at": isotime(self.created_at),
            "updated_at": isotime(self.updated_at),
            "run_count": self.run_count,
            "skipped": self.skip_count,
        }


def parse_time(value: Any, name: str, tz_name: str) -> float | None:
    """An ISO 8601 date-time (naive: in the schedule's zone) → epoch seconds; null → None."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidSubmission(f"'{name}' must be an ISO 8601 date-time such as 2026-12-24T18:00:00+01:00, or null")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSubmission(f"'{name}' is not an ISO 8601 date-time: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=check_timezone(tz_name))
    try:
        return when.astimezone(timezone.utc).timestamp()
    except (OverflowError, OSError, ValueError):
        raise InvalidSubmission(f"'{name}' is out of range: {value!r}") from None


def parse_schedule(data: Any, *, current: Schedule | None = None, default_timezone: str = "UTC") -> dict[str, Any]:
    """Check a POST body (``current`` None) or a PATCH body; return the fields, normalised.

    Raises ``InvalidSubmission`` naming the first bad field. The task template is returned as
    given: the caller checks it as a submission.
    """
    if not isinstance(data, dict):
        raise InvalidSubmission("the body must be a JSON object with 'task' and 'cron'")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidSubmission(f"unknown field(s): {', '.join(unknown)}; a schedule has {', '.join(FIELDS)}")
    if current is None:
        for required in ("task", "cron"):
            if required not in data:
                raise InvalidSubmission(f"'{required}' is required")
    out: dict[str, Any] = {}
    if "name" in data:
        name = data["name"]
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LEN):
            raise InvalidSubmission(f"'name' must be a non-empty string of at most {MAX_NAME_LEN} characters")
        out["name"] = name.strip() if isinstance(name, str) else None
    if "task" in data and not isinstance(data["task"], dict):
        raise InvalidSubmission("'task' must be a submission object, as POST /taskrun/api/tasks takes")
    if "task" in data:
        out["task"] = data["task"]
    if "cron" in data:
        out["cron"] = check_cron(data["cron"])
    tz_name = data.get("timezone", current.timezone if current else default_timezone)
    if "timezone" in data or current is None:
        if tz_name is None:
            tz_name = default_timezone
        check_timezone(tz_name)
        out["timezone"] = tz_name
    for flag in ("enabled",):
        if flag in data:
            if not isinstance(data[flag], bool):
                raise InvalidSubmission(f"'{flag}' must be true or false")
            out[flag] = data[flag]
    for name in ("start_at", "end_at"):
        if name in data:
            out[name] = parse_time(data[name], name, tz_name)
    start = out.get("start_at", current.start_at if current else None)
    end = out.get("end_at", current.end_at if current else None)
    if start is not None and end is not None and end <= start:
        raise InvalidSubmission("'end_at' must be later than 'start_at'")
    if "max_runs" in data:
        n = data["max_runs"]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RUNS_LIMIT):
            raise InvalidSubmission(f"'max_runs' must be an integer from 1 to {MAX_RUNS_LIMIT}, or null")
        out["max_runs"] = n
    for name, allowed in (("overlap", OVERLAP_POLICIES), ("catch_up", CATCH_UP_POLICIES)):
        if name in data:
            if data[name] not in allowed:
                raise InvalidSubmission(f"'{name}' must be one of {', '.join(allowed)}")
            out[name] = data[name]
    if "callback_url" in data:
        url = data["callback_url"]
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_URL_LEN):
            raise InvalidSubmission(f"'callback_url' must be an http(s) URL of at most {MAX_URL_LEN} characters, or null")
        out["callback_url"] = url
    return out
