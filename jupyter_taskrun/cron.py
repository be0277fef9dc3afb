"""Cron expressions in a time zone: validation, the next run times, and the expression in words.

Pure functions over croniter (parsing, field semantics) and zoneinfo (time zones). Guarantees:

- an expression is 5 fields (minute hour day-of-month month day-of-week) or one of the
  ``@``-aliases in ``ALIASES``; anything else, or a time zone that is not an IANA name, raises
  ``InvalidSubmission`` naming the field (``cron`` / ``timezone``);
- times are cron *wall-clock* times in the schedule's zone, each run at most once:
  a wall time skipped by a DST change (02:30 on the spring-forward night) runs at the moment the
  clock jumps (03:00, new offset); a wall time that happens twice (01:30 on the fall-back night)
  runs once, at its first occurrence. This is what Vixie cron does for fixed times;
- returned datetimes are timezone-aware in the schedule's zone (ISO with offset when shown).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import InvalidSubmission

#: the aliases cron(8) knows that name a time (``@reboot`` names none, so it is refused)
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MAX_CRON_LEN = 200
#: a cron that matches no date within this many years (``0 0 30 2 *``) is refused
MAX_YEARS_BETWEEN_RUNS = 8

_DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December"]  # fmt: skip


def check_cron(expr: object) -> str:
    """The expression, stripped, if croniter accepts it as 5 fields or an alias; else 400 naming ``cron``."""
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidSubmission("'cron' must be a cron expression such as \"0 3 * * *\" or @daily")
    text = " ".join(expr.split())
    if len(text) > MAX_CRON_LEN:
        raise InvalidSubmission(f"'cron' is too long (at most {MAX_CRON_LEN} characters)")
    fields = ALIASES.get(text.lower(), text)
    if fields.startswith("@"):
        raise InvalidSubmission(f"'cron': unknown alias {text!r}; use one of {', '.join(ALIASES)} or 5 fields")
    if len(fields.split()) != 5:
        raise InvalidSubmission(f"'cron' must have 5 fields (minute hour day month weekday), not {len(fields.split())}: {text!r}")
    try:
        it = croniter(fields, datetime(2000, 1, 1), max_years_between_matches=MAX_YEARS_BETWEEN_RUNS)
        it.get_next(datetime)
    except Exception as e:  # croniter's errors: CroniterBadCronError, ...NotAlphaError, ...BadDateError
        detail = str(e) if "failed to find" not in str(e) else "it matches no date"
        raise InvalidSubmission(f"'cron' {text!r} is not valid: {detail}") from None
    return text


def check_timezone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidSubmission("'timezone' must be an IANA time zone name such as Europe/Berlin or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSubmission(f"'timezone': unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None


def server_timezone() -> str:
    """The server's own zone name: ``$TZ``, else /etc/localtime's target, else ``UTC``."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            check_timezone(tz)
            return tz
        except InvalidSubmission:
            pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            name = target.split("zoneinfo/", 1)[1]
            check_timezone(name)
            return name
    except (OSError, InvalidSubmission):
        pass
    return "UTC"


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) == wall


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumped over ``wall`` (a wall time that does not exist)."""
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)  # before the jump
    hi = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)  # after it
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0).astimezone(zone)


def _to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    if not _exists(wall, zone):
        return _gap_end(wall, zone)
    return wall.replace(tzinfo=zone, fold=0)  # ambiguous: the first occurrence


def next_runs(
    cron: str,
    zone: ZoneInfo,
    after: datetime,
    count: int = 5,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` run times strictly after ``after`` (aware), within [start_at, end_at]."""
    fields = ALIASES.get(cron.lower(), cron)
    if start_at is not None and start_at > after:
        after = start_at - timedelta(microseconds=1)
    local = after.astimezone(zone)
    # a minute early in wall time: times at or before ``after`` are skipped below, and on a
    # fall-back night the wall clock repeats, so the wall time alone cannot say which are past
    it = croniter(fields, local.replace(tzinfo=None) - timedelta(minutes=1), max_years_between_matches=MAX_YEARS_BETWEEN_RUNS)
    out: list[datetime] = []
    last: datetime | None = None
    while len(out) < count:
        try:
            wall = it.get_next(datetime)
        except Exception:  # no further date (cannot happen for a checked cron; be safe)
            break
        when = _to_instant(wall, zone)
        if when <= after or (last is not None and when <= last):
            continue
        if end_at is not None and when > end_at:
            break
        out.append(when)
        last = when
    return out


def latest_run_at_or_before(cron: str, zone: ZoneInfo, now: datetime, not_before: datetime) -> datetime | None:
    """The most recent run time in (not_before, now], or None: what a missed-run catch-up fires for."""
    fields = ALIASES.get(cron.lower(), cron)
    it = croniter(
        fields, now.astimezone(zone).replace(tzinfo=None) + timedelta(minutes=1), max_years_between_matches=MAX_YEARS_BETWEEN_RUNS
    )
    for _ in range(200):  # a few steps back cover DST folds; more means nothing is due
        try:
            when = _to_instant(it.get_prev(datetime), zone)
        except Exception:
            return None
        if when <= now:
            return when if when > not_before else None
    return None


def isoformat(when: datetime) -> str:
    return when.isoformat()


# ------------------------------------------------------------------ in words


def _num(field: str) -> int | None:
    return int(field) if field.isdigit() else None


def _list_words(field: str, names: list[str], offset: int) -> str | None:
    """``1-5`` → "Monday to Friday", ``1,3`` → "Monday and Wednesday" (names[value - offset])."""
    try:
        if "-" in field and "," not in field and "/" not in field:
            a, b = (int(x) % (7 if names is _DAY_NAMES else 100) for x in field.split("-"))
            return f"{names[a - offset]} to {names[b - offset]}"
        values = [int(x) for x in field.split(",")]
    except (ValueError, IndexError):
        return None
    if names is _DAY_NAMES:
        values = [v % 7 for v in values]
    try:
        words = [names[v - offset] for v in values]
    except IndexError:
        return None
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(cron: str, tz_name: str) -> str:
    """The expression in words, e.g. "every day at 03:00 (Europe/Berlin)"; unusual ones stay cron."""
    fields = ALIASES.get(cron.lower(), cron)
    minute, hour, dom, month, dow = fields.split()
    zone = f" ({tz_name})"
    m, h = _num(minute), _num(hour)
    if minute == "*" and hour == "*":
        when = "every minute"
    elif minute.startswith("*/") and minute[2:].isdigit() and hour == "*":
        when = f"every {int(minute[2:])} minutes"
    elif m is not None and hour == "*":
        when = "every hour" if m == 0 else f"every hour at :{m:02d}"
    elif m is not None and hour.startswith("*/") and hour[2:].isdigit():
        when = f"every {int(hour[2:])} hours at :{m:02d}"
    elif m is not None and h is not None:
        when = f"at {h:02d}:{m:02d}"
    elif m is not None and all(x.isdigit() for x in hour.split(",")):
        when = "at " + ", ".join(f"{int(x):02d}:{m:02d}" for x in hour.split(","))
    else:
        return f"cron {cron}{zone}"
    days = ""
    if dow != "*" and dom == "*":
        if dow in ("1-5", "MON-FRI", "mon-fri"):
            days = "on weekdays"
        else:
            words = _list_words(dow, _DAY_NAMES, 0)
            if words is None:
                return f"cron {cron}{zone}"
            days = f"every {words}"
    elif dom != "*" and dow == "*":
        if not all(x.isdigit() for x in dom.split(",")):
            return f"cron {cron}{zone}"
        days = f"on day {dom.replace(',', ', ')} of the month"
    elif dom != "*" and dow != "*":
        return f"cron {cron}{zone}"
    if month != "*":
        words = _list_words(month, _MONTH_NAMES, 1)
        if words is None:
            return f"cron {cron}{zone}"
        days = f"{days or 'every day'} in {words}"
    if when.startswith("at "):
        return f"{days or 'every day'} {when}{zone}"
    return f"{when}{' ' + days if days else ''}{zone}"
