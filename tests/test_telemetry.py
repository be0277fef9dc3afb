"""Tasks show up in the server's own telemetry: Prometheus /metrics and jupyter_events."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_taskrun.server.telemetry import TASK_SCHEMA_ID


@pytest.fixture
def taskrun_config():
    return {"emit_task_events": True}  # off by default: the event bus reaches every user


async def test_prometheus_metrics_and_structured_events(api, jp_serverapp, jp_fetch):
    seen: list[dict] = []

    async def listener(logger, schema_id, data):
        seen.append(dict(data))

    jp_serverapp.event_logger.add_listener(schema_id=TASK_SCHEMA_ID, listener=listener)
    ok = await api.run(code="print(1)", name="fine")
    bad = await api.run(code="1/0", name="broken")
    for _ in range(100):
        if len([e for e in seen if e["task_id"] == bad["id"]]) >= 3:
            break
        await asyncio.sleep(0.02)
    mine = [(e["task_id"], e["status"]) for e in seen]
    assert mine == [(ok["id"], "queued"), (ok["id"], "running"), (ok["id"], "completed"),
                    (bad["id"], "queued"), (bad["id"], "running"), (bad["id"], "failed")]  # fmt: skip
    failed = [e for e in seen if e["status"] == "failed"][0]
    assert "ZeroDivisionError" in failed["reason"] and failed["wall"] > 0 and failed["name"] == "broken"

    resp = await jp_fetch("metrics", method="GET")
    text = resp.body.decode()
    assert 'jupyter_taskrun_tasks_finished_total{status="completed"}' in text
    assert 'jupyter_taskrun_tasks_finished_total{status="failed"}' in text
    assert "jupyter_taskrun_task_wall_seconds_bucket" in text
    assert "jupyter_taskrun_tasks_running 0.0" in text
