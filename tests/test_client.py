"""The Python clients (sync and async) against a real ``jupyter server`` subprocess.

No mocks: tasks run in real kernels, streams go over real TCP (through a real proxy that
cuts connections when a test needs a network failure).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid

import nbformat
import pytest

from jupyter_taskrun.client import (
    AsyncTaskRunClient,
    ServerNotFound,
    TaskRunClient,
    TaskRunConnectionError,
    TaskRunHTTPError,
    discover_server,
)

try:
    from ._server import TCPProxy, free_port, taskrun_server
except ImportError:  # tests/ is not a package
    from _server import TCPProxy, free_port, taskrun_server


def slow_code(n: int, delay: float) -> str:
    return f"import time\nfor i in range({n}):\n    print('line', i, flush=True)\n    time.sleep({delay})\n"


def slow_text(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


SLEEP = "import time\ntime.sleep(120)\n"


def new_tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with taskrun_server(tmp_path_factory.mktemp("taskrun-client")) as srv:
        yield srv


@pytest.fixture
def client(server) -> TaskRunClient:
    return TaskRunClient(server.url, server.token)


def wait_for_status(client: TaskRunClient, task_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(task_id)
        if task["status"] == status:
            return task
        assert time.monotonic() < deadline, f"task never reached {status}: {task}"
        time.sleep(0.05)


def check_stream(events: list[dict], after: int = 0) -> list[int]:
    """Events are seq after+1, after+2, ... with no gap or duplicate, then one end event."""
    assert events, "no events"
    assert events[-1]["type"] == "end"
    seqs = [e["seq"] for e in events[:-1]]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), seqs
    assert all(e["type"] != "end" for e in events[:-1])
    return seqs


def log_text(events: list[dict], stream: str | None = None) -> str:
    return "".join(e["data"]["text"] for e in events if e["type"] == "log" and (stream is None or e["data"]["stream"] == stream))


# ---------------------------------------------------------------------------
# Basics
# ---------------------------------------------------------------------------


def test_status(client):
    status = client.status()
    for key in ("version", "executor", "capacity", "running", "queued"):
        assert key in status, status


def test_submit_get_wait_logs(client):
    tag = new_tag()
    task = client.submit("print('hello')", name="hello", tags=[tag])
    assert task["status"] in ("queued", "running")
    assert task["name"] == "hello"
    assert task["source_kind"] == "code"
    assert tag in task["tags"]
    assert client.get(task["id"])["id"] == task["id"]

    done = client.wait(task["id"], timeout=120)
    assert done["status"] == "completed", done
    assert done["finished_at"] and done["started_at"]
    assert client.logs(task["id"]) == "hello\n"
    assert client.get(task["id"])["status"] == "completed"


def test_submit_with_server_side_wait_and_result(client):
    task = client.submit("6 * 7", wait=120)
    assert task["status"] == "completed", task
    assert task["result"]["data"]["text/plain"] == "42"


def test_failed_task_records_error(client):
    done = client.wait(client.submit("x = 1\n1 / 0")["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["ename"] == "ZeroDivisionError"
    assert done["error"]["cell_index"] == 0


def test_cells_and_notebook_sources(client):
    cells = client.submit(cells=["x = 21", "print(x * 2)"])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('from notebook')")]
    notebook = client.submit(notebook=nb)
    assert cells["source_kind"] == "cells" and notebook["source_kind"] == "notebook"
    assert client.wait(cells["id"], timeout=120)["status"] == "completed"
    assert client.wait(notebook["id"], timeout=120)["status"] == "completed"
    assert client.logs(cells["id"]) == "42\n"
    assert client.logs(notebook["id"]) == "from notebook\n"


def test_submit_path_under_root(client, server):
    (server.root / "scripts").mkdir(exist_ok=True)
    (server.root / "scripts" / "hello.py").write_text("import os\nprint(os.path.basename(__file__))\n")
    task = client.submit(path="scripts/hello.py")
    assert task["source_kind"] == "path" and task["path"] == "scripts/hello.py"
    assert client.wait(task["id"], timeout=120)["status"] == "completed"
    assert client.logs(task["id"]) == "hello.py\n"


def test_submit_batch_all_or_nothing(client):
    tag = new_tag()
    tasks = client.submit_batch([{"code": "print(1)", "tags": [tag]}, {"code": "print(2)", "tags": [tag]}])
    assert len(tasks) == 2 and tasks[0]["id"] != tasks[1]["id"]
    assert [client.wait(t["id"], timeout=120)["status"] for t in tasks] == ["completed", "completed"]
    assert [client.logs(t["id"]) for t in tasks] == ["1\n", "2\n"]

    bad = new_tag()
    with pytest.raises(TaskRunHTTPError) as info:
        client.submit_batch([{"code": "print(1)", "tags": [bad]}, {"code": "1", "cells": ["2"], "tags": [bad]}])
    assert info.value.status == 400
    assert client.list(tag=bad)["tasks"] == []


def test_list_paging_filters_and_iterator(client):
    tag = new_tag()
    ids = []
    for i in range(3):
        ids.append(client.submit("pass", name=f"page-{i}", tags=[tag])["id"])
    for task_id in ids:
        client.wait(task_id, timeout=120)
    newest_first = list(reversed(ids))

    page1 = client.list(tag=tag, limit=2)
    assert [t["id"] for t in page1["tasks"]] == newest_first[:2]
    assert page1["next_cursor"]
    page2 = client.list(tag=tag, limit=2, cursor=page1["next_cursor"])
    assert [t["id"] for t in page2["tasks"]] == newest_first[2:]
    assert not page2["next_cursor"]

    assert [t["id"] for t in client.iter_tasks(tag=tag, page_size=1)] == newest_first
    assert len(client.list(tag=tag, status="completed")["tasks"]) == 3
    assert client.list(tag=tag, status="failed")["tasks"] == []
    assert len(client.list(tag=tag, status=["failed", "completed"])["tasks"]) == 3
    assert [t["id"] for t in client.list(tag=tag, name="page-1")["tasks"]] == [ids[1]]
    owner = client.get(ids[0])["owner"]
    mine = client.list(tag=tag, owner=owner)["tasks"]
    assert ids[0] in [t["id"] for t in mine] and all(t["owner"] == owner for t in mine)
    assert client.list(tag=tag, owner="no-such-owner-" + tag)["tasks"] == []


# ---------------------------------------------------------------------------
# Waiting and streaming
# ---------------------------------------------------------------------------


def test_stream_events_replay_and_live(client):
    task = client.submit(slow_code(5, 0.05))
    events = list(client.stream_events(task["id"], timeout=120))
    check_stream(events)
    assert events[-1]["data"]["status"] == "completed"
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses[-1] == "completed" and "running" in statuses
    assert log_text(events) == slow_text(5)
    assert all(e["task_id"] == task["id"] for e in events[:-1])

    # a finished task replays the same log, then ends
    replay = list(client.stream_events(task["id"], timeout=30))
    assert [e["seq"] for e in replay] == [e["seq"] for e in events]


def test_stream_events_resume_after(client):
    task = client.submit(slow_code(6, 0.2))
    stream = client.stream_events(task["id"], timeout=120)
    first = [next(stream) for _ in range(3)]
    stream.close()  # the client goes away mid-task
    rest = list(client.stream_events(task["id"], after=first[-1]["seq"], timeout=120))
    events = first + rest
    check_stream(events)
    assert log_text(events) == slow_text(6)


def test_stream_events_reconnect_transparently_through_dropped_connections(server):
    proxy = TCPProxy(server.port)
    try:
        client = TaskRunClient(proxy.url, server.token)
        task = client.submit(slow_code(12, 0.25))
        events, drops = [], 0
        for event in client.stream_events(task["id"], timeout=120):
            events.append(event)
            if event["type"] == "log" and drops < 2 and len([e for e in events if e["type"] == "log"]) in (2, 6):
                drops += proxy.drop() and 1
        assert drops == 2
        check_stream(events)
        assert events[-1]["data"]["status"] == "completed"
        assert log_text(events) == slow_text(12)
        assert proxy.connections >= 1 + 3  # the submit, then the stream thrice
    finally:
        proxy.close()


def test_a_stream_ends_on_its_first_connection(server):
    """The ``end`` frame has no id of its own: it is not taken for a replayed duplicate (which
    would cost a reconnection, and its back-off, at the end of every stream)."""
    proxy = TCPProxy(server.port)
    try:
        client = TaskRunClient(proxy.url, server.token)
        task = client.submit("print('done')", wait=120)
        assert task["status"] == "completed"
        before = proxy.connections
        events = list(client.stream_events(task["id"], timeout=30))
        check_stream(events)
        assert proxy.connections == before + 1

        async def read_async() -> list[dict]:
            c = AsyncTaskRunClient(proxy.url, server.token)
            return [e async for e in c.stream_events(task["id"], timeout=30)]

        before = proxy.connections
        assert [e["seq"] for e in asyncio.run(read_async())] == [e["seq"] for e in events]
        assert proxy.connections == before + 1
    finally:
        proxy.close()


def test_wait_timeout_then_cancel_then_delete(client):
    task = client.submit(SLEEP)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait(task["id"], timeout=1.5)
    assert time.monotonic() - t0 < 10  # generous: CI machines are slow, the point is "not 120 s"

    wait_for_status(client, task["id"], "running")
    with pytest.raises(TaskRunHTTPError) as info:
        client.delete(task["id"])  # still active
    assert info.value.status == 409
    cancelled = client.cancel(task["id"])
    assert cancelled["id"] == task["id"]
    client.cancel(task["id"])  # idempotent while cancelling (or a 409 once already finished)
    done = client.wait(task["id"], timeout=60)
    assert done["status"] == "cancelled"

    with pytest.raises(TaskRunHTTPError) as info:
        client.cancel(task["id"])
    assert info.value.status == 409

    assert client.delete(task["id"]) is None
    with pytest.raises(TaskRunHTTPError) as info:
        client.get(task["id"])
    assert info.value.status == 404


def test_cancel_idempotent_or_conflict(client):
    task = client.submit(SLEEP)
    wait_for_status(client, task["id"], "running")
    client.cancel(task["id"])
    try:
        client.cancel(task["id"])
    except TaskRunHTTPError as e:  # already finished cancelling
        assert e.status == 409
    assert client.wait(task["id"], timeout=60)["status"] == "cancelled"


def test_wait_by_polling(client):
    task = client.submit("print('poll')")
    done = client.wait(task["id"], timeout=120, use_sse=False)
    assert done["status"] == "completed"


def test_wait_falls_back_to_polling_when_streaming_is_impossible(server):
    proxy = TCPProxy(server.port, block=b"/events")  # e.g. a middlebox that kills event streams
    try:
        client = TaskRunClient(proxy.url, server.token)
        task = client.submit("import time\ntime.sleep(1)\nprint('polled')")
        with pytest.raises(TaskRunConnectionError):
            list(client.stream_events(task["id"]))
        done = client.wait(task["id"], timeout=120)
        assert done["status"] == "completed" and proxy.blocked >= 2

        async def async_wait():
            c = AsyncTaskRunClient(proxy.url, server.token)
            return await c.wait((await c.rerun(task["id"]))["id"], timeout=120)

        assert asyncio.run(async_wait())["status"] == "completed"
        assert proxy.blocked >= 3
    finally:
        proxy.close()


def test_rerun(client):
    tag = new_tag()
    first = client.submit("print('again')", name="re", tags=[tag])
    client.wait(first["id"], timeout=120)
    second = client.rerun(first["id"])
    assert second["id"] != first["id"]
    assert second["rerun_of"] == first["id"]
    assert second["name"] == "re" and tag in second["tags"]
    assert client.wait(second["id"], timeout=120)["status"] == "completed"
    assert client.logs(second["id"]) == "again\n"


def test_logs_streams_and_offsets(client):
    code = "import sys\nprint('abc', flush=True)\nprint('err', file=sys.stderr, flush=True)\nprint('d\u00e9f', flush=True)\n"
    task = client.submit(code)
    assert client.wait(task["id"], timeout=120)["status"] == "completed"
    assert client.logs(task["id"], stream="stdout") == "abc\nd\u00e9f\n"
    assert client.logs(task["id"], stream="stderr") == "err\n"
    full = client.logs(task["id"])
    assert sorted(full.splitlines()) == sorted(["abc", "err", "d\u00e9f"])

    raw = client.logs_bytes(task["id"], stream="stdout")
    assert raw == "abc\nd\u00e9f\n".encode()
    assert client.logs_bytes(task["id"], stream="stdout", offset=4) == raw[4:]
    assert client.logs(task["id"], stream="stdout", offset=4) == "d\u00e9f\n"
    assert client.logs(task["id"], stream="stdout", offset=len(raw)) == ""
    # incremental reads over the merged log add up to the whole
    merged = client.logs_bytes(task["id"])
    assert client.logs_bytes(task["id"], offset=3) == merged[3:]


def test_outputs_notebook_metrics(client, server):
    code = "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))\n6 * 7\n"
    task = client.submit(code)
    assert client.wait(task["id"], timeout=120)["status"] == "completed"

    outputs = client.outputs(task["id"])
    kinds = {o["output_type"]: o for o in outputs}
    assert kinds["display_data"]["data"]["text/html"] == "<b>hi</b>"
    assert kinds["execute_result"]["data"]["text/plain"] == "42"
    assert all(o["cell_index"] == 0 for o in outputs)

    nb = client.notebook(task["id"])
    assert nb["nbformat"] == 4
    assert nb["cells"][0]["outputs"]
    saved = client.notebook(task["id"], save="executed-from-client.ipynb")
    assert saved["path"] == "executed-from-client.ipynb"
    on_disk = json.loads((server.root / "executed-from-client.ipynb").read_text())
    assert on_disk["nbformat"] == 4

    metrics = client.metrics(task["id"])
    assert isinstance(metrics["summary"], dict)
    assert isinstance(metrics["samples"], list)


def test_stream_changes(client):
    seen: list[dict] = []
    ids: list[str] = []
    done = threading.Event()

    def follow():
        try:
            # after=0: replay every change kept, then live, so the test cannot miss "created"
            for change in client.stream_changes(after=0, timeout=120):
                seen.append(change)
                if ids and any(c["task_id"] == ids[0] and c["type"] == "status" and c["data"].get("status") == "completed" for c in seen):
                    return
        finally:
            done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.5)  # most likely connected: exercise the live path
    task = client.submit("print('change')")
    ids.append(task["id"])
    client.wait(task["id"], timeout=120)
    client.submit("pass")  # one more change, so the follower wakes up even if it missed the race above
    assert done.wait(60), seen
    ours = [c for c in seen if c["task_id"] == task["id"]]
    assert ours[0]["type"] == "created"
    assert ours[0]["data"]["id"] == task["id"]
    assert ours[-1]["type"] == "status" and ours[-1]["data"]["status"] == "completed"
    seqs = [c["seq"] for c in seen]
    assert seqs == sorted(set(seqs))

    # resumable: starting after a known seq replays from the next one
    created_seq = ours[0]["seq"]
    stream = client.stream_changes(after=created_seq - 1, timeout=30)
    first = next(stream)
    stream.close()
    assert first["seq"] == created_seq and first["task_id"] == task["id"]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_unknown_task_is_404_everywhere(client):
    missing = "0" * 32
    calls = [
        lambda: client.get(missing),
        lambda: client.cancel(missing),
        lambda: client.rerun(missing),
        lambda: client.delete(missing),
        lambda: client.logs(missing),
        lambda: client.outputs(missing),
        lambda: client.notebook(missing),
        lambda: client.metrics(missing),
        lambda: list(client.stream_events(missing, timeout=10)),
        lambda: client.wait(missing, timeout=10),
    ]
    for call in calls:
        with pytest.raises(TaskRunHTTPError) as info:
            call()
        err = info.value
        assert err.status == 404, err
        assert err.reason and err.message
        assert str(err).startswith("HTTP 404")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"code": "1", "cells": ["2"]},
        {"code": "1", "bogus": 1},
        {"code": "1", "kernel_name": "no-such-kernel"},
        {"code": "1", "timeout": -1},
        {"code": "1", "priority": "high"},
        {"path": "../outside.py"},
        {"path": "does-not-exist.py"},
        {"notebook": {"cells": []}},
    ],
)
def test_invalid_submissions_raise_4xx_and_change_nothing(client, kwargs):
    tag = new_tag()
    with pytest.raises(TaskRunHTTPError) as info:
        client.submit(**kwargs, tags=[tag])
    assert 400 <= info.value.status < 500, info.value
    assert info.value.message
    assert client.list(tag=tag)["tasks"] == []


def test_bad_token_is_refused(server):
    bad = TaskRunClient(server.url, "not-the-token")
    for call in (bad.status, lambda: bad.list(), lambda: list(bad.stream_events("0" * 32, timeout=10))):
        with pytest.raises(TaskRunHTTPError) as info:
            call()
        assert info.value.status in (401, 403)


def test_unreachable_server():
    client = TaskRunClient(f"http://127.0.0.1:{free_port()}/", "x", request_timeout=5)
    with pytest.raises(TaskRunConnectionError):
        client.status()
    with pytest.raises(TaskRunConnectionError):
        list(client.stream_events("0" * 32))


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


def test_discovery_from_environment(server, monkeypatch):
    monkeypatch.setenv("JUPYTER_TASKRUN_URL", server.url)
    monkeypatch.setenv("JUPYTER_TASKRUN_TOKEN", server.token)
    client = TaskRunClient()
    assert client.url == server.url and client.token == server.token
    assert "version" in client.status()


def test_discovery_from_runtime_info(server, monkeypatch, tmp_path):
    for key in ("JUPYTER_TASKRUN_URL", "JUPYTER_TASKRUN_TOKEN", "JPY_PARENT_PID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime_dir))
    (server.root / "sub").mkdir(exist_ok=True)
    monkeypatch.chdir(server.root / "sub")
    info = discover_server()
    assert info.token == server.token
    assert f":{server.port}/" in info.url
    assert os.path.realpath(info.root_dir) == os.path.realpath(server.root)
    assert "version" in TaskRunClient().status()

    # an explicit URL without a token takes the token from the matching runtime info
    assert discover_server(server.url).token == server.token
    # the server that started this process wins
    monkeypatch.setenv("JPY_PARENT_PID", str(server.proc.pid))
    monkeypatch.chdir(tmp_path)
    assert discover_server().token == server.token
    assert TaskRunClient(server.url, server.token).server_root == info.root_dir

    empty = tmp_path / "empty-runtime"
    empty.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(empty))
    with pytest.raises(ServerNotFound):
        TaskRunClient()


# ---------------------------------------------------------------------------
# Inside a running kernel (an asyncio loop already runs in the calling thread)
# ---------------------------------------------------------------------------


def test_sync_client_inside_a_running_kernel(server):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=server.env)
    try:
        code = (
            "import asyncio\n"
            "asyncio.get_running_loop()  # an event loop runs in this very thread\n"
            "from jupyter_taskrun.client import TaskRunClient\n"
            f"c = TaskRunClient({server.url!r}, {server.token!r})\n"
            "t = c.submit(\"print('from a kernel')\")\n"
            "done = c.wait(t['id'], timeout=120)\n"
            "events = list(c.stream_events(t['id'], timeout=60))\n"
            "print('RESULT', done['status'], repr(c.logs(t['id'])), events[-1]['type'])\n"
        )
        out: list[str] = []
        errors: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, output_hook=hook, timeout=180)
        assert reply["content"]["status"] == "ok", errors
        assert "RESULT completed 'from a kernel\\n' end" in "".join(out)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# ---------------------------------------------------------------------------
# Async client
# ---------------------------------------------------------------------------


def test_async_client(server):
    async def main():
        tag = new_tag()
        async with AsyncTaskRunClient(server.url, server.token) as c:
            assert "version" in await c.status()
            task = await c.submit(slow_code(4, 0.05), name="async", tags=[tag])
            events = [e async for e in c.stream_events(task["id"], timeout=120)]
            check_stream(events)
            assert log_text(events) == slow_text(4)
            done = await c.wait(task["id"], timeout=60)
            assert done["status"] == "completed"
            assert await c.logs(task["id"]) == slow_text(4)
            assert await c.logs(task["id"], offset=len("line 0\n")) == slow_text(4)[len("line 0\n") :]
            assert (await c.get(task["id"]))["name"] == "async"

            again = await c.rerun(task["id"])
            assert again["rerun_of"] == task["id"]
            assert (await c.wait(again["id"], timeout=120, use_sse=False))["status"] == "completed"
            page = await c.list(tag=tag, limit=1)
            assert [t["id"] for t in page["tasks"]] == [again["id"]] and page["next_cursor"]
            assert [t["id"] async for t in c.iter_tasks(tag=tag, page_size=1)] == [again["id"], task["id"]]

            batch = await c.submit_batch([{"code": "6 * 7", "tags": [tag]}])
            assert (await c.wait(batch[0]["id"], timeout=120))["status"] == "completed"
            outputs = await c.outputs(batch[0]["id"])
            assert outputs[0]["data"]["text/plain"] == "42"
            assert (await c.notebook(batch[0]["id"]))["nbformat"] == 4
            assert "samples" in await c.metrics(batch[0]["id"])

            sleeper = await c.submit(SLEEP, tags=[tag])
            with pytest.raises(TimeoutError):
                await c.wait(sleeper["id"], timeout=1)
            await c.cancel(sleeper["id"])
            assert (await c.wait(sleeper["id"], timeout=60))["status"] == "cancelled"
            await c.delete(sleeper["id"])
            with pytest.raises(TaskRunHTTPError) as info:
                await c.get(sleeper["id"])
            assert info.value.status == 404
            with pytest.raises(TaskRunHTTPError) as info:
                await c.submit(code="1", bogus=True)
            assert info.value.status == 400
            with pytest.raises(TaskRunHTTPError) as info:
                [e async for e in c.stream_events("0" * 32, timeout=10)]
            assert info.value.status == 404

        bad = AsyncTaskRunClient(server.url, "wrong")
        with pytest.raises(TaskRunHTTPError) as info:
            await bad.status()
        assert info.value.status in (401, 403)
        down = AsyncTaskRunClient(f"http://127.0.0.1:{free_port()}/", "x", request_timeout=5)
        with pytest.raises(TaskRunConnectionError):
            await down.status()
        with pytest.raises(TaskRunConnectionError):
            [e async for e in down.stream_events("0" * 32)]

    asyncio.run(main())


def test_async_stream_resume_and_reconnect(server):
    proxy = TCPProxy(server.port)

    async def main():
        c = AsyncTaskRunClient(proxy.url, server.token)
        task = await c.submit(slow_code(10, 0.25))

        # explicit resume: leave after three events, come back with after=
        stream = c.stream_events(task["id"], timeout=120)
        first = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()
        events = list(first)
        drops = 0
        async for event in c.stream_events(task["id"], after=first[-1]["seq"], timeout=120):
            events.append(event)
            if event["type"] == "log" and drops < 2 and len([e for e in events if e["type"] == "log"]) in (2, 6):
                drops += proxy.drop() and 1  # transparent reconnect
        assert drops == 2
        check_stream(events)
        assert log_text(events) == slow_text(10)

        # the change feed, async
        feed = c.stream_changes(after=0, timeout=60)
        other = None
        got = []

        async def consume():
            async for change in feed:
                got.append(change)
                if other and change["task_id"] == other["id"]:
                    return

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(1.0)
        other = await c.submit("pass")
        await asyncio.wait_for(consumer, 60)
        await feed.aclose()
        assert any(ch["task_id"] == other["id"] and ch["type"] == "created" for ch in got)

    try:
        asyncio.run(main())
    finally:
        proxy.close()
