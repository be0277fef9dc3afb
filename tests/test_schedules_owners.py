"""Schedules are owned like tasks: another user can neither see nor change one; an admin sees all."""

from __future__ import annotations

from .helpers import assert_json_error
from .test_chores_server import call, jp_server_config  # noqa: F401  (the multi-user server)

TICK = {"code": "print('tick')"}


async def test_another_user_can_neither_see_nor_change_a_schedule(api):
    code, s = await call(api, "POST", "schedules", "alice", {"task": TICK, "cron": "0 3 * * *"})
    assert code == 201 and s["owner"] == "alice"
    sid = s["id"]
    assert (await call(api, "GET", "schedules", "bob"))[1]["schedules"] == []
    for method, path, body in [
        ("GET", f"schedules/{sid}", None),
        ("PATCH", f"schedules/{sid}", {"enabled": False}),
        ("POST", f"schedules/{sid}/run", None),
        ("DELETE", f"schedules/{sid}", None),
    ]:
        code, err = await call(api, method, path, "bob", body)
        assert_json_error(code, err, 404, "not-found")
    code, same = await call(api, "GET", f"schedules/{sid}", "alice")
    assert same["enabled"] is True and same["run_count"] == 0
    assert [x["id"] for x in (await call(api, "GET", "schedules", "admin"))[1]["schedules"]] == [sid]
