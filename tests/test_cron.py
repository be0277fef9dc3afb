"""Unit tests of the pure schedule parts: cron times across DST changes, the words, input checks,
and the missed-firing policy (``scheduler.plan_firing``) at chosen instants."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jupyter_taskrun.cron import check_cron, check_timezone, describe, latest_run_at_or_before, next_runs
from jupyter_taskrun.errors import InvalidSubmission
from jupyter_taskrun.schedule import Schedule, parse_schedule
from jupyter_taskrun.server.scheduler import next_fire_time, plan_firing

BERLIN = check_timezone("Europe/Berlin")
NEW_YORK = check_timezone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def test_daily_time_keeps_its_wall_clock_across_spring_forward():
    # Europe/Berlin goes from +01:00 to +02:00 at 02:00 on 2026-03-29
    assert iso(next_runs("0 3 * * *", BERLIN, utc(2026, 3, 27, 12), 3)) == [
        "2026-03-28T03:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T03:00:00+02:00",
    ]


def test_a_skipped_wall_time_runs_once_when_the_clock_jumps():
    times = next_runs("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 3)
    assert iso(times) == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    # in real time: 23.5 h after the previous run (02:30 +01:00 -> 03:00 +02:00), then 23.5 h again
    assert times[1].timestamp() - times[0].timestamp() == 23.5 * 3600
    assert times[2].timestamp() - times[1].timestamp() == 23.5 * 3600


def test_a_repeated_wall_time_runs_once_at_its_first_occurrence():
    # back from +02:00 to +01:00 at 03:00 on 2026-10-25: 01:30 happens once, 02:30 twice
    assert iso(next_runs("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2)) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    hourly = next_runs("0 * * * *", BERLIN, utc(2026, 10, 24, 22, 30), 4)
    assert iso(hourly) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]
    assert len({t.timestamp() for t in hourly}) == 4


def test_other_zone_and_instants_are_strictly_after():
    after = utc(2026, 3, 8, 6, 0)  # America/New_York springs forward at 02:00 local = 07:00Z
    times = next_runs("*/30 * * * *", NEW_YORK, after, 4)
    assert iso(times) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    assert all(t > after for t in times)
    assert next_runs("* * * * *", BERLIN, utc(2026, 1, 1, 0, 0), 1)[0] == utc(2026, 1, 1, 0, 1)


def test_start_end_and_latest_missed_time():
    start, end = utc(2026, 5, 1), utc(2026, 5, 3, 12)
    assert iso(next_runs("0 0 * * *", timezone_utc := check_timezone("UTC"), utc(2026, 1, 1), 10, start_at=start, end_at=end)) == [
        "2026-05-01T00:00:00+00:00",
        "2026-05-02T00:00:00+00:00",
        "2026-05-03T00:00:00+00:00",
    ]
    latest = latest_run_at_or_before("*/15 * * * *", timezone_utc, utc(2026, 5, 1, 10, 7), utc(2026, 5, 1, 9, 0))
    assert latest == utc(2026, 5, 1, 10, 0)
    assert latest_run_at_or_before("0 0 * * *", timezone_utc, utc(2026, 5, 1, 10), utc(2026, 5, 1, 1)) is None


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 3 * * *", "every day at 03:00 (Europe/Berlin)"),
        ("@daily", "every day at 00:00 (Europe/Berlin)"),
        ("*/15 * * * *", "every 15 minutes (Europe/Berlin)"),
        ("* * * * *", "every minute (Europe/Berlin)"),
        ("0 9 * * 1-5", "on weekdays at 09:00 (Europe/Berlin)"),
        ("30 8 * * 1", "every Monday at 08:30 (Europe/Berlin)"),
        ("0 0 1 * *", "on day 1 of the month at 00:00 (Europe/Berlin)"),
        ("@hourly", "every hour (Europe/Berlin)"),
        ("15 10 * * 1,3,5", "every Monday, Wednesday and Friday at 10:15 (Europe/Berlin)"),
        ("0 12 * 1,7 *", "every day in January and July at 12:00 (Europe/Berlin)"),
        ("1-5 */2 3 * 4", "cron 1-5 */2 3 * 4 (Europe/Berlin)"),
    ],
)
def test_cron_in_words(cron, words):
    assert describe(cron, "Europe/Berlin") == words


@pytest.mark.parametrize(
    ("cron", "needle"),
    [("", "must be a cron"), ("* * *", "5 fields"), ("* * * * * *", "5 fields"), ("61 * * * *", "not valid"),
     ("0 0 31 2 *", "matches no date"), ("@reboot", "unknown alias"), (5, "must be a cron")],
)  # fmt: skip
def test_bad_cron_names_the_field(cron, needle):
    with pytest.raises(InvalidSubmission, match="'cron'") as e:
        check_cron(cron)
    assert needle in str(e.value)


def test_bad_fields_are_named():
    good = {"task": {"code": "1"}, "cron": "* * * * *"}
    for body, field in [
        ({**good, "timezone": "Mars/Olympus"}, "timezone"),
        ({**good, "timezone": "../etc/passwd"}, "timezone"),
        ({**good, "overlap": "sometimes"}, "overlap"),
        ({**good, "catch_up": "all"}, "catch_up"),
        ({**good, "max_runs": 0}, "max_runs"),
        ({**good, "max_runs": True}, "max_runs"),
        ({**good, "enabled": "yes"}, "enabled"),
        ({**good, "start_at": "tomorrow"}, "start_at"),
        ({**good, "start_at": "2026-05-02T00:00:00Z", "end_at": "2026-05-01T00:00:00Z"}, "end_at"),
        ({**good, "callback_url": "ftp://x"}, "callback_url"),
        ({**good, "colour": "red"}, "colour"),
        ({"cron": "* * * * *"}, "task"),
        ({"task": {"code": "1"}}, "cron"),
    ]:
        with pytest.raises(InvalidSubmission, match=field):
            parse_schedule(body)


def _schedule(**kw) -> Schedule:
    s = Schedule(id="s", owner="u", name="n", task={"code": "1"}, cron="*/10 * * * *", timezone="UTC", **kw)
    return s


def test_plan_fires_on_time_and_moves_to_the_next_time():
    s = _schedule()
    s.next_fire_at = utc(2026, 5, 1, 10, 0).timestamp()
    plan = plan_firing(s, s.next_fire_at + 0.2, grace=60)
    assert plan == (s.next_fire_at, utc(2026, 5, 1, 10, 10).timestamp(), False)
    assert plan_firing(s, s.next_fire_at - 1, grace=60).fire_for is None


def test_plan_after_downtime_follows_catch_up():
    now = utc(2026, 5, 1, 13, 5).timestamp()  # down from before 10:00 until 13:05
    skip = _schedule(catch_up="skip")
    skip.next_fire_at = utc(2026, 5, 1, 10, 0).timestamp()
    assert plan_firing(skip, now, grace=60) == (None, utc(2026, 5, 1, 13, 10).timestamp(), True)
    once = _schedule(catch_up="run_once")
    once.next_fire_at = skip.next_fire_at
    # one run, for the latest missed time (13:00), then on as usual
    assert plan_firing(once, now, grace=60) == (utc(2026, 5, 1, 13, 0).timestamp(), utc(2026, 5, 1, 13, 10).timestamp(), True)


def test_a_clock_jump_back_never_repeats_a_time():
    s = _schedule()
    s.next_fire_at = utc(2026, 5, 1, 10, 10).timestamp()  # it fired for 10:00
    # the clock is set back to 09:58: nothing is due until 10:10 again
    assert plan_firing(s, utc(2026, 5, 1, 9, 58).timestamp(), grace=60).fire_for is None


def test_next_fire_time_honours_pause_end_and_max_runs():
    s = _schedule(max_runs=2)
    t0 = utc(2026, 5, 1, 10, 1).timestamp()
    assert next_fire_time(s, t0) == utc(2026, 5, 1, 10, 10).timestamp()
    s.fire_count = 2
    assert next_fire_time(s, t0) is None
    assert next_fire_time(_schedule(enabled=False), t0) is None
    assert next_fire_time(_schedule(end_at=utc(2026, 5, 1, 10, 5).timestamp()), t0) is None
