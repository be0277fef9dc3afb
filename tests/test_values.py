"""Recorded values (issue 15): ``record()`` in real task kernels → ``value`` events, ``Task.values``,
``GET …/values`` (series), and the list route sorted and filtered by a value (real server, SQLite)."""

from __future__ import annotations

import json
import uuid

import pytest
from tornado.httpclient import AsyncHTTPClient

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


# -- the list route: sort and filter by a recorded value ---------------------------------

#: the recorded values of six tasks, oldest first: some lack a value, one records none
RUNS = [
    {"accuracy": 0.9, "model": "resnet", "loss": 0.5},
    {"accuracy": 0.95, "model": "vit"},
    {"accuracy": 0.7, "model": "resnet", "loss": 0.2},
    {"model": "resnet"},
    {"accuracy": 1, "flag": True},
    {},
]


def record_code(values: dict) -> str:
    return "from jupyter_taskrun import record\n" + "".join(f"record({k!r}, {v!r})\n" for k, v in values.items()) + "print('ok')"


async def listed(api, **params) -> list[str]:
    """The ids the list route returns for these query parameters, following every page."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        code, body, _ = await api.call("GET", "tasks", params=query)
        assert code == 200, body
        ids += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if not cursor:
            return ids


async def six_tasks(api) -> tuple[str, list[dict]]:
    tag = f"values-{uuid.uuid4().hex[:8]}"
    tasks = []
    for i, values in enumerate(RUNS):
        task = await api.run(code=record_code(values), tags=[tag], name=f"{tag}-{i}")
        assert task["status"] == "completed", task["error"]
        assert task["values"] == values
        tasks.append(task)
    return tag, tasks


def by_value(tasks: list[dict], name: str, descending: bool) -> list[str]:
    """The order the route promises: tasks with the value by it, ties and tasks without it newest first."""
    newest_first = list(reversed(tasks))
    have = [t for t in newest_first if name in t["values"]]
    have.sort(key=lambda t: t["values"][name], reverse=descending)  # stable: ties stay newest first
    return [t["id"] for t in have] + [t["id"] for t in newest_first if name not in t["values"]]


async def test_list_sorted_by_a_value_with_missing_ones_last(api):
    tag, tasks = await six_tasks(api)
    for descending in (False, True):
        sort = ("-" if descending else "") + "values.accuracy"
        expected = by_value(tasks, "accuracy", descending)
        assert await listed(api, tag=tag, sort=sort) == expected
        assert await listed(api, tag=tag, sort=sort, limit=2) == expected  # paged: same order, no gap or repeat
        assert await listed(api, tag=tag, sort=sort, limit=4) == expected
        assert await listed(api, name=tag, sort=sort, limit=3) == expected
    # by a string value, with several tasks missing it
    assert await listed(api, tag=tag, sort="values.model") == by_value(tasks, "model", False)
    # every task is still listed, each once
    assert sorted(await listed(api, tag=tag, sort="-values.loss")) == sorted(t["id"] for t in tasks)


WHERE = [
    ("values.accuracy>=0.9", lambda v: isinstance(v.get("accuracy"), (int, float)) and v["accuracy"] >= 0.9),
    ("values.accuracy<0.9", lambda v: "accuracy" in v and v["accuracy"] < 0.9),
    ("values.accuracy=1", lambda v: v.get("accuracy") == 1),
    ("values.model=resnet", lambda v: v.get("model") == "resnet"),
    ('values.model="vit"', lambda v: v.get("model") == "vit"),
    ("values.model!=resnet", lambda v: "model" in v and v["model"] != "resnet"),
    ("values.loss", lambda v: "loss" in v),
    ("values.flag=true", lambda v: v.get("flag") is True),
    ("values.accuracy>=0.9,values.model=resnet", lambda v: v.get("accuracy", 0) >= 0.9 and v.get("model") == "resnet"),
    ("values.accuracy>99999999999999999999999", lambda v: False),
    ("values.accuracy>-1e400", lambda v: "accuracy" in v),
    ("values.nobody", lambda v: False),
]


async def test_list_filtered_by_values(api):
    tag, tasks = await six_tasks(api)
    for where, keep in WHERE:
        expected = [t["id"] for t in reversed(tasks) if keep(t["values"])]
        assert await listed(api, tag=tag, where=where) == expected, where
        sorted_ids = await listed(api, tag=tag, where=where, sort="-values.accuracy")
        assert sorted_ids == [i for i in by_value(tasks, "accuracy", True) if i in expected], where
        assert await listed(api, tag=tag, where=where, limit=1) == expected, where
        assert await listed(api, name=tag, where=where) == expected, where  # without the tag index too


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sort": "accuracy"}, "sort"),
        ({"sort": "values."}, "sort"),
        ({"sort": "+values.accuracy"}, "sort"),
        ({"sort": "values.acc'uracy"}, "sort"),
        ({"sort": "created_at"}, "sort"),
        ({"where": "accuracy>0.9"}, "where"),
        ({"where": "values.accuracy>[1]"}, "where"),
        ({"where": "values.flag>true"}, "where"),
        ({"where": "values.a=1,,values.b=2"}, "where"),
        ({"where": 'values.a"b=1'}, "where"),
        ({"where": "values.accuracy>{}"}, "where"),
    ],
)
async def test_a_bad_sort_or_where_is_400_naming_it(api, params, field):
    code, body, _ = await api.call("GET", "tasks", params=params)
    assert code == 400, body
    assert body["reason"] == "invalid" and f"'{field}'" in body["message"], body


async def test_sort_given_twice_is_refused(api):
    url = api.url("tasks") + "?sort=values.a&sort=-values.a"
    resp = await AsyncHTTPClient().fetch(url, headers=api.headers, raise_error=False)
    body = json.loads(resp.body)
    assert resp.code == 400 and "'sort'" in body["message"], body


BAD = """
import math
from IPython.display import display
from jupyter_taskrun import record
from jupyter_taskrun.values import MAX_VALUE_NAMES, VALUE_MIME
errors = []
for args in [("x", math.nan), ("x", {1, 2}), ("bad name", 1), ("x", "y" * 70000), ("x", 1, "step"), ("x", math.inf)]:
    try:
        record(*args)
    except (TypeError, ValueError) as e:
        errors.append(type(e).__name__)
print("refused", len(errors), flush=True)
# a kernel sending the messages itself is held to the same rules
for i in range(MAX_VALUE_NAMES + 5):
    display({VALUE_MIME: {"name": f"n{i}", "value": i, "step": None}}, raw=True)
display({VALUE_MIME: {"name": "bad name", "value": 1, "step": None}}, raw=True)
display({VALUE_MIME: {"name": "big", "value": "y" * 70000, "step": None}}, raw=True)
display({VALUE_MIME: {"name": "n0", "value": "latest", "step": "not a number"}}, raw=True)
display({VALUE_MIME: {"name": "n1", "value": "again", "step": 3}}, raw=True)
"""


async def test_bad_values_are_refused_in_the_task_and_past_the_kernel(api):
    from jupyter_taskrun.values import MAX_VALUE_NAMES

    task = await api.run(code=BAD)
    assert task["status"] == "completed", task["error"]
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert "refused 6" in logs
    expected = {f"n{i}": i for i in range(MAX_VALUE_NAMES)}
    expected["n1"] = "again"  # a name already recorded may go on
    assert task["values"] == expected
    code, body, _ = await api.call("GET", f"tasks/{task['id']}/values")
    assert [p["value"] for p in body["series"]["n1"]] == [1, "again"]
