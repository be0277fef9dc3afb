"""Recorded values (issue 15): ``record()`` in real task kernels → ``value`` events, ``Task.values``,
``GET …/values`` (series), and the list route sorted and filtered by a value (real server, SQLite)."""

from __future__ import annotations

import pytest

SERIES = """
from jupyter_taskrun import record
record("accuracy", 0.93)
for step in range(3):
    record("loss", 1.0 / (step + 1), step=step)
record("model", {"name": "resnet", "layers": [1, 2]})
print("done")
"""


async def test_values_arrive_as_events_and_series(api):
    task = await api.run(code=SERIES)
    assert task["status"] == "completed", task["error"]
    assert task["values"] == {"accuracy": 0.93, "loss": pytest.approx(1 / 3), "model": {"name": "resnet", "layers": [1, 2]}}
    code, body, _ = await api.call("GET", f"tasks/{task['id']}/values")
    assert code == 200, body
    assert body["task_id"] == task["id"]
    assert body["values"] == task["values"]
    loss = body["series"]["loss"]
    assert [p["step"] for p in loss] == [0, 1, 2]
    assert [p["value"] for p in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert all(p["time"].endswith("Z") and isinstance(p["seq"], int) for p in loss)
    assert body["series"]["accuracy"] == [{"value": 0.93, "step": None, "time": body["series"]["accuracy"][0]["time"],
                                           "seq": body["series"]["accuracy"][0]["seq"]}]  # fmt: skip
    events = await api.events(task["id"])
    values = [e["data"] for e in events if e["type"] == "value"]
    assert values[0] == {"name": "accuracy", "value": 0.93, "step": None}
    assert len(values) == 5
    # intercepted: nothing of it in the outputs or logs
    code, outputs, _ = await api.call("GET", f"tasks/{task['id']}/outputs")
    assert all("taskrun.value" not in str(o) for o in outputs["outputs"])
