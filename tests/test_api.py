"""HTTP API (issue 3) through a real Jupyter server: every endpoint, every error, auth, SSE, WebSocket, spec."""

from __future__ import annotations

import asyncio
import json
import re

import nbformat
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_taskrun.server.handlers import handler_routes

SLEEPY = "import time\ntime.sleep(60)"


async def count_tasks(api) -> int:
    _, data, _ = await api.call("GET", "tasks", params={"limit": 500})
    return len(data["tasks"])


# ---------------------------------------------------------------- endpoints


async def test_submit_returns_201_location_and_task(api, jp_base_url):
    code, task, headers = await api.call("POST", "tasks", {"code": "print(1)", "name": "one", "tags": ["a", "b"]})
    assert code == 201
    assert headers["Location"] == f"{jp_base_url.rstrip('/')}/taskrun/api/tasks/{task['id']}"
    assert task["status"] in ("queued", "running") and task["name"] == "one" and task["tags"] == ["a", "b"]
    assert re.fullmatch(r"[0-9a-f]{32}", task["id"])
    import getpass

    assert task["owner"] == getpass.getuser()  # the shared-token identity is the server's user
    await api.wait(task["id"])


async def test_submit_wait_200_when_done_202_when_not(api):
    code, task, _ = await api.call("POST", "tasks", {"code": "1 + 1"}, params={"wait": 60})
    assert code == 200 and task["status"] == "completed"
    code, task, _ = await api.call("POST", "tasks", {"code": SLEEPY}, params={"wait": 0.3})
    assert code == 202 and task["status"] in ("queued", "running")
    await api.call("POST", f"tasks/{task['id']}/cancel")
    await api.wait(task["id"])


async def test_batch_is_all_or_nothing(api):
    before = await count_tasks(api)
    code, err, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}, {"code": "2", "bogus": 1}]})
    assert code == 400 and "tasks[1]" in err["message"] and err["reason"] == "invalid"
    assert await count_tasks(api) == before
    code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "print('a')"}, {"cells": ["print('b')"]}]})
    assert code == 201 and len(data["tasks"]) == 2
    done = [await api.wait(t["id"]) for t in data["tasks"]]
    assert [t["status"] for t in done] == ["completed", "completed"]


async def test_list_filters_and_cursor(api, taskrun):
    taskrun.pause()
    ids = []
    for i in range(7):
        t = await api.submit(code="1", name=f"{'alpha' if i < 4 else 'beta'}-{i}", tags=["even"] if i % 2 == 0 else ["odd"])
        ids.append(t["id"])
    code, page, _ = await api.call("GET", "tasks", params={"limit": 3})
    assert code == 200 and [t["id"] for t in page["tasks"]] == ids[::-1][:3]
    seen = [t["id"] for t in page["tasks"]]
    while page["next_cursor"]:
        _, page, _ = await api.call("GET", "tasks", params={"limit": 3, "cursor": page["next_cursor"]})
        seen += [t["id"] for t in page["tasks"]]
    assert seen == ids[::-1]
    _, page, _ = await api.call("GET", "tasks", params={"tag": "even"})
    assert [t["id"] for t in page["tasks"]] == [ids[6], ids[4], ids[2], ids[0]]
    _, page, _ = await api.call("GET", "tasks", params={"name": "beta"})
    assert {t["name"] for t in page["tasks"]} == {"beta-4", "beta-5", "beta-6"}
    _, page, _ = await api.call("GET", "tasks", params={"status": "queued,running"})
    assert len(page["tasks"]) == 7
    me = page["tasks"][0]["owner"]
    _, page, _ = await api.call("GET", "tasks", params={"owner": me, "status": "completed"})
    assert page["tasks"] == []
    await api.call("POST", f"tasks/{ids[0]}/cancel")
    _, page, _ = await api.call("GET", "tasks", params={"status": "cancelled"})
    assert [t["id"] for t in page["tasks"]] == [ids[0]]
    for i in ids[1:]:
        await api.call("POST", f"tasks/{i}/cancel")
    taskrun.resume()


async def test_created_range_bounds_are_the_shown_times(api, taskrun):
    """created_after=<a task's own created_at> keeps it, created_before=<it> leaves it out, for every
    task: the API shows times rounded to the microsecond, and the bounds compare with those."""
    taskrun.pause()
    made = [await api.submit(code="1", name=f"range-{i}") for i in range(40)]
    try:
        for t in made:
            _, after, _ = await api.call("GET", "tasks", params={"created_after": t["created_at"], "limit": 500})
            _, before, _ = await api.call("GET", "tasks", params={"created_before": t["created_at"], "limit": 500})
            assert t["id"] in {x["id"] for x in after["tasks"]}, t["created_at"]
            assert t["id"] not in {x["id"] for x in before["tasks"]}, t["created_at"]
    finally:
        for t in made:
            await api.call("POST", f"tasks/{t['id']}/cancel")
        taskrun.resume()


async def test_get_task_fields(api):
    task = await api.run(code="from jupyter_taskrun import progress\nprogress(1, 4, 'quarter')\n'done'", tags=["x"])
    for key in ("id", "name", "status", "owner", "kernel_name", "source_kind", "created_at", "started_at",
                "finished_at", "progress", "error", "metrics", "tags"):  # fmt: skip
        assert key in task
    assert task["progress"] == {"value": 1, "total": 4, "message": "quarter"}
    assert task["kernel_name"] == "python3" and task["source_kind"] == "code" and task["error"] is None


async def test_rerun_repeats_the_submission(api):
    first = await api.run(cells=["x = 20", "print(x + 1)"], name="again", tags=["r"])
    code, second, headers = await api.call("POST", f"tasks/{first['id']}/rerun")
    assert code == 201 and second["id"] != first["id"] and second["rerun_of"] == first["id"]
    assert headers["Location"].endswith(second["id"])
    second = await api.wait(second["id"])
    assert second["name"] == "again" and second["tags"] == ["r"]
    _, logs, _ = await api.call("GET", f"tasks/{second['id']}/logs")
    assert logs == "21\n"


async def test_delete_finished_and_refuse_active(api, taskrun):
    done = await api.run(code="print('bye')")
    code, _, _ = await api.call("DELETE", f"tasks/{done['id']}")
    assert code == 204
    for path in ("", "/logs", "/events", "/notebook", "/outputs", "/metrics"):
        code, err, _ = await api.call("GET", f"tasks/{done['id']}{path}")
        assert code == 404 and err["reason"] == "not-found"
    assert taskrun.store.read_events(done["id"]) == []
    assert taskrun.store.get_artifact(done["id"], "notebook") is None
    active = await api.submit(code=SLEEPY)
    code, err, _ = await api.call("DELETE", f"tasks/{active['id']}")
    assert code == 409 and err["reason"] == "conflict"
    await api.call("POST", f"tasks/{active['id']}/cancel")
    await api.wait(active["id"])


async def test_logs_merged_streams_and_offsets(api):
    code = "import sys\nfor i in range(3):\n    print('out', i, flush=True)\n    print('err', i, file=sys.stderr, flush=True)\n"
    task = await api.run(code=code)
    code_, merged, headers = await api.call("GET", f"tasks/{task['id']}/logs")
    assert code_ == 200 and headers["Content-Type"].startswith("text/plain")
    assert merged.splitlines() == ["out 0", "err 0", "out 1", "err 1", "out 2", "err 2"]
    assert int(headers["X-Log-Offset"]) == len(merged.encode())
    _, out, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"stream": "stdout"})
    assert out == "out 0\nout 1\nout 2\n"
    _, tail, headers = await api.call("GET", f"tasks/{task['id']}/logs", params={"stream": "stderr", "offset": 6})
    assert tail == "err 1\nerr 2\n" and headers["X-Log-Offset"] == "18"
    _, nothing, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"offset": 10_000})
    assert nothing == ""


async def test_outputs_notebook_download_and_save(api, jp_root_dir):
    task = await api.run(cells=["from IPython.display import HTML\nHTML('<i>x</i>')", "print('text')"])
    _, outs, _ = await api.call("GET", f"tasks/{task['id']}/outputs")
    assert outs["outputs"][0]["output_type"] == "execute_result" and outs["outputs"][0]["cell_index"] == 0
    code, nb, headers = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert code == 200 and headers["Content-Type"].startswith("application/x-ipynb+json")
    assert "attachment" in headers["Content-Disposition"]
    nbformat.validate(nbformat.from_dict(nb))
    assert nb["cells"][1]["outputs"][0]["text"] == "text\n"
    (jp_root_dir / "results").mkdir()
    code, saved, _ = await api.call("POST", f"tasks/{task['id']}/notebook", {"path": "results/run.ipynb"})
    assert code == 201 and saved["path"] == "results/run.ipynb"
    on_disk = nbformat.read(jp_root_dir / "results" / "run.ipynb", as_version=4)
    assert on_disk.cells[1].outputs[0].text == "text\n"
    code, err, _ = await api.call("POST", f"tasks/{task['id']}/notebook", {"path": "../escape.ipynb"})
    assert code == 400 and err["reason"] == "path-not-allowed"


async def test_metrics_has_series_and_summary(api, taskrun):
    taskrun.metrics_interval = 0.1
    task = await api.run(code="import time\nx = [0] * 10_000_000\ntime.sleep(0.6)")
    code, m, _ = await api.call("GET", f"tasks/{task['id']}/metrics")
    assert code == 200
    assert len(m["samples"]) >= 3 and all({"t", "cpu", "rss"} <= set(s) for s in m["samples"])
    assert max(s["rss"] for s in m["samples"]) >= 70 * 1024 * 1024  # the 80 MB list is visible
    assert m["summary"]["peak_rss"] >= max(s["rss"] for s in m["samples"])
    assert m["cells"][0]["duration"] >= 0.6


async def test_status_and_openapi(api):
    code, st, _ = await api.call("GET", "status")
    assert code == 200
    assert st["executor"]["kind"] == "local" and st["capacity"] == 2 and {"running", "queued", "version"} <= set(st)
    code, spec, _ = await api.call("GET", "openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.")


def test_openapi_spec_matches_routes():
    from jupyter_taskrun.server.handlers.openapi import load_spec

    spec_paths = set(load_spec()["paths"])
    route_paths = set()
    for pattern, _handler in handler_routes():
        if pattern.endswith("(.*)"):
            continue  # the JSON 404 catch-all
        route_paths.add(re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern))
    assert spec_paths == route_paths
    # every method a handler implements is documented, and nothing more
    methods = {"get", "post", "delete", "put", "patch"}
    for pattern, handler in handler_routes():
        if pattern.endswith("(.*)"):
            continue
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
        implemented = {m for m in methods if m in vars(handler)}
        documented = set(load_spec()["paths"][path]) & methods
        assert implemented == documented, (path, implemented, documented)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body, reason, words",
    [
        (None, "invalid", "malformed JSON"),
        ({"code": "1", "bogus": True}, "invalid", "unknown field"),
        ({"code": 5}, "invalid", "must be a string"),
        ({"code": "1", "path": "a.py"}, "invalid", "exactly one source"),
        ({}, "invalid", "exactly one of"),
        ({"path": "missing.py"}, "path-not-found", "no file"),
        ({"path": "../outside.py"}, "path-not-allowed", "outside"),
        ({"path": "/etc/passwd.py"}, "path-not-allowed", "relative"),
        ({"code": "1", "kernel_name": "nope"}, "unknown-kernel", "no kernel"),
        ({"code": "1", "timeout": -1}, "invalid", "greater than 0"),
        ({"code": "1", "cell_timeout": "5"}, "invalid", "must be a number"),
        ({"code": "1", "priority": 1.5}, "invalid", "integer"),
        ({"code": "1", "tags": "x"}, "invalid", "list of strings"),
        ({"code": "1", "env": {"1BAD": "x"}}, "invalid", "not valid"),
        ({"code": "1", "cwd": "../.."}, "path-not-allowed", "outside"),
        ({"code": "1", "name": "a\x00b"}, "invalid", "NUL"),
        ({"notebook": {"cells": []}}, "invalid", "nbformat"),
        ({"cells": []}, "invalid", "non-empty"),
        ({"code": "1", "parameters": {"not an identifier": 1}}, "invalid", "identifier"),
        ([{"code": "1"}], "invalid", "JSON object"),
    ],
)
async def test_bad_submissions_get_4xx_and_change_nothing(api, body, reason, words):
    before = await count_tasks(api)
    raw = b"{not json" if body is None else None
    code, err, headers = await api.call("POST", "tasks", body, raw_body=raw)
    assert code == 400, err
    assert headers["Content-Type"].startswith("application/json")
    assert err["reason"] == reason and words in err["message"], err
    assert await count_tasks(api) == before


@pytest.mark.parametrize("taskrun_config", [{"max_request_bytes": 2048, "max_queued_tasks": 3}])
async def test_oversized_body_and_full_queue(api, taskrun):
    before = await count_tasks(api)
    code, err, _ = await api.call("POST", "tasks", {"code": "x" * 5000})
    assert code == 413 and err["reason"] == "too-large"
    taskrun.pause()
    ids = [(await api.submit(code="1"))["id"] for _ in range(3)]
    code, err, headers = await api.call("POST", "tasks", {"code": "1"})
    assert code == 429 and err["reason"] == "queue-full" and int(headers["Retry-After"]) > 0
    code, err, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}]})
    assert code == 429
    assert await count_tasks(api) == before + 3
    for i in ids:
        await api.call("POST", f"tasks/{i}/cancel")
    taskrun.resume()


@pytest.mark.parametrize(
    "method, path, params, expected",
    [
        ("GET", "tasks/" + "0" * 32, None, 404),
        ("POST", "tasks/" + "0" * 32 + "/cancel", None, 404),
        ("POST", "tasks/" + "0" * 32 + "/rerun", None, 404),
        ("DELETE", "tasks/" + "0" * 32, None, 404),
        ("GET", "tasks/not-an-id", None, 404),
        ("GET", "nothing/here", None, 404),
        ("GET", "tasks", {"status": "sleeping"}, 400),
        ("GET", "tasks", {"limit": "0"}, 400),
        ("GET", "tasks", {"limit": "many"}, 400),
        ("GET", "tasks", {"cursor": "abc"}, 400),
        ("GET", "tasks", {"cursor": "-5"}, 400),
        ("POST", "tasks", {"wait": "-1"}, 400),
    ],
)
async def test_bad_requests(api, method, path, params, expected):
    body = {"code": "1"} if method == "POST" and path == "tasks" else None
    code, err, headers = await api.call(method, path, body, params=params)
    assert code == expected, err
    assert headers["Content-Type"].startswith("application/json") and {"message", "reason"} <= set(err)


async def test_bad_resume_points(api):
    task = await api.run(code="1")
    for headers, params in (({"Last-Event-ID": "abc"}, None), ({"Last-Event-ID": "-3"}, None), ({}, {"after": "x"})):
        code, err, _ = await api.call("GET", f"tasks/{task['id']}/events", headers=headers, params=params)
        assert code == 400 and err["reason"] == "invalid"
    code, _, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"stream": "stdin"})
    assert code == 400
    code, _, _ = await api.call("GET", f"tasks/{task['id']}/logs", params={"offset": "-1"})
    assert code == 400


async def test_every_route_refuses_unauthenticated(api, jp_fetch, jp_http_port, jp_base_url):
    task = await api.run(code="1")
    from jupyter_taskrun.server.handlers.openapi import load_spec

    for path, ops in load_spec()["paths"].items():
        for method in ops:
            if method not in ("get", "post", "delete"):
                continue
            url_path = path.replace("{task_id}", task["id"])
            if path.endswith("/ws"):
                req = HTTPRequest(f"ws://127.0.0.1:{jp_http_port}{jp_base_url}{url_path.lstrip('/')}")
                with pytest.raises(Exception) as info:
                    await websocket_connect(req)
                assert "403" in str(info.value)
                continue
            resp = await jp_fetch(
                *url_path.strip("/").split("/"),
                method=method.upper(),
                headers={"Authorization": ""},
                raise_error=False,
                allow_nonstandard_methods=True,
                body=b"{}" if method == "post" else None,
            )
            assert resp.code == 403, (method, path, resp.code)
    # nothing was done by the refused requests
    assert (await api.get(task["id"]))["status"] == "completed"


# ----------------------------------------------------------------------- SSE


@pytest.mark.parametrize("taskrun_config", [{"sse_keepalive_interval": 0.2}])
async def test_sse_replay_live_end_and_keepalive(api):
    task = await api.submit(code="import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.3)")
    frames = await api.sse(f"tasks/{task['id']}/events")
    events = [f for f in frames if not f["comment"] and f["event"] != "end"]
    assert [f["id"] for f in events] == list(range(1, len(events) + 1))
    assert all(f["event"] == f["data"]["type"] for f in events)
    assert frames[-1]["event"] == "end" and frames[-1]["data"]["status"] == "completed"
    assert any(f["comment"] for f in frames), "keep-alive comments while the task is quiet"
    logs = "".join(f["data"]["data"]["text"] for f in events if f["event"] == "log")
    assert logs == "0\n1\n2\n3\n4\n"


async def test_sse_resume_has_no_gap_and_no_duplicate(api):
    task = await api.submit(code="import time\nfor i in range(20):\n    print(i, flush=True)\n    time.sleep(0.05)")
    first = await api.sse(f"tasks/{task['id']}/events", stop=lambda fr: len([f for f in fr if f["event"] == "log"]) >= 5)
    last_id = [f["id"] for f in first if f["id"]][-1]
    rest = await api.sse(f"tasks/{task['id']}/events", headers={"Last-Event-ID": str(last_id)})
    ids = [f["id"] for f in first if f["id"]] + [f["id"] for f in rest if f["id"]]
    assert ids == list(range(1, ids[-1] + 1))
    again = await api.sse(f"tasks/{task['id']}/events", params={"after": 3})
    assert [f["id"] for f in again if f["id"]][0] == 4
    full = await api.events(task["id"])
    text = "".join(e["data"]["text"] for e in full if e["type"] == "log")
    assert text == "".join(f"{i}\n" for i in range(20))


async def test_sse_fan_out_to_many_subscribers(api, taskrun):
    task = await api.submit(code="import time\ntime.sleep(0.5)\nfor i in range(30):\n    print(i, flush=True)\n    time.sleep(0.01)")
    streams = await asyncio.gather(*[api.sse(f"tasks/{task['id']}/events") for _ in range(40)])
    reference = [f["id"] for f in streams[0]]
    for frames in streams:
        assert [f["id"] for f in frames] == reference
        assert frames[-1]["event"] == "end"
    await asyncio.sleep(0.1)
    assert taskrun.broker.subscriber_count(task["id"]) == 0  # disconnects free everything
    assert taskrun.status()["streams"] == 0


async def test_slow_subscriber_lags_then_catches_up_from_the_store(api, taskrun):
    taskrun.broker.maxsize = 5  # tiny queues: a burst of output overflows them
    task = await api.submit(code="for i in range(500):\n    print(i)")
    frames = await api.sse(f"tasks/{task['id']}/events")
    ids = [f["id"] for f in frames if f["id"]]
    assert ids == list(range(1, ids[-1] + 1))
    text = "".join(f["data"]["data"]["text"] for f in frames if f["event"] == "log")
    assert text == "".join(f"{i}\n" for i in range(500))


async def test_global_change_feed_and_resume(api):
    frames = []
    reader = asyncio.ensure_future(api.sse("events", stop=lambda fr: any(f["event"] == "deleted" for f in fr), timeout=60))
    await asyncio.sleep(0.3)
    task = await api.run(code="print(1)")
    await api.call("DELETE", f"tasks/{task['id']}")
    frames = await reader
    mine = [f for f in frames if f["data"] and f["data"].get("task_id") == task["id"]]
    kinds = [f["event"] for f in mine]
    assert kinds[0] == "created" and kinds[-1] == "deleted"
    statuses = [f["data"]["data"]["status"] for f in mine if f["event"] == "status"]
    assert statuses == ["running", "completed"]
    # resume from the first of them: exactly the rest, in order
    after = mine[0]["id"]
    replay = await api.sse("events", params={"after": after}, stop=lambda fr: any(f["event"] == "deleted" for f in fr))
    assert [f["id"] for f in replay if f["data"] and f["data"].get("task_id") == task["id"]] == [f["id"] for f in mine[1:]]


# ----------------------------------------------------------------- WebSocket


async def test_websocket_twin(api, jp_http_port, jp_base_url, jp_auth_header):
    task = await api.submit(code="import time\ntime.sleep(0.5)\nprint('via ws')")
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}taskrun/api/tasks/{task['id']}/ws"
    conns = [await websocket_connect(HTTPRequest(url, headers=jp_auth_header)) for _ in range(3)]
    results = []
    for ws in conns:
        hello = json.loads(await ws.read_message())
        assert hello["type"] == "connected" and hello["task_id"] == task["id"]
    await conns[0].write_message(json.dumps({"type": "ping"}))
    for ws in conns:
        msgs = []
        while True:
            raw = await ws.read_message()
            if raw is None:
                break
            msg = json.loads(raw)
            msgs.append(msg)
            if msg["type"] == "end":
                break
        results.append(msgs)
    assert any(m["type"] == "pong" for m in results[0])
    for msgs in results:
        events = [m for m in msgs if "seq" in m]
        assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
        assert msgs[-1] == {"type": "end", "task_id": task["id"], "status": "completed", "deleted": False}
        assert "".join(m["data"]["text"] for m in events if m["type"] == "log") == "via ws\n"
    for ws in conns:
        ws.close()
