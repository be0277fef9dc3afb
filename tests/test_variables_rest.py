"""Variables over REST (issue 15): ``variables_in`` / ``variables_out`` on a real multi-user server
(in-process, real kernels, real SQLite). The bytes served are the ones the task kernel pickled, only
their owner gets them (another user and an admin: 404), and bad ``variables_in`` is refused whole
(400 naming the field, nothing stored). The test process unpickles: it is the submitter."""

from __future__ import annotations

import base64
import hashlib
import pickle
from typing import Any

import cloudpickle
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .helpers import assert_json_error, db_count
from .test_chores_server import call, jp_server_config  # noqa: F401  (the multi-user server: X-Test-User, "admin" sees all)

CAP = 4096

#: the task pickles ``model`` itself, exactly as the collecting code does, and prints the digest
TASK = """\
import hashlib, pickle, cloudpickle
model = {"weights": [w * factor for w in cfg["weights"]], "name": cfg["name"]}
scores = tuple(range(5))
print("DIGEST", hashlib.sha256(cloudpickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest())
print("CFG", cfg, factor)
model["name"]
"""


@pytest.fixture
def taskrun_config() -> dict[str, Any]:
    return {"max_variable_bytes": CAP, "max_task_variable_bytes": 3 * CAP}


def b64(value: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(value)).decode("ascii")


async def raw_get(api, path: str, user: str) -> tuple[int, bytes, Any]:
    req = HTTPRequest(api.url(path), headers={"X-Test-User": user}, request_timeout=60)
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    return resp.code, resp.body or b"", resp.headers


async def finished(api, task_id: str, user: str) -> dict[str, Any]:
    code, task = await call(api, "GET", f"tasks/{task_id}", user, params={"wait": 90})
    assert code == 200 and task["status"] in ("completed", "failed", "cancelled", "timed_out"), task
    return task


async def logs(api, task_id: str, user: str) -> str:
    code, text = await call(api, "GET", f"tasks/{task_id}/logs", user)
    assert code == 200, text
    return text


async def test_variables_round_trip_byte_identical_and_owner_only(api):
    cfg = {"weights": [1.5, 2.5], "name": "lin"}
    body = {
        "code": TASK,
        "variables_in": {"cfg": b64(cfg), "factor": b64(2)},
        "variables_out": ["model", "scores", "absent", "@result"],
    }
    code, task = await call(api, "POST", "tasks", "alice", body)
    assert code == 201, task
    tid = task["id"]
    task = await finished(api, tid, "alice")
    assert task["status"] == "completed", task["error"]
    text = await logs(api, tid, "alice")
    assert "CFG {'weights': [1.5, 2.5], 'name': 'lin'} 2" in text, text
    digest = next(line.split()[1] for line in text.splitlines() if line.startswith("DIGEST"))

    code, index = await call(api, "GET", f"tasks/{tid}/variables", "alice")
    assert code == 200, index
    assert index["task_id"] == tid and index["status"] == "completed" and index["ready"] is True
    assert index["requested"] == ["model", "scores", "absent", "@result"]
    assert sorted(index["inputs"], key=lambda e: e["name"]) == [
        {"name": "cfg", "size": len(cloudpickle.dumps(cfg))},
        {"name": "factor", "size": len(cloudpickle.dumps(2))},
    ]
    by_name = {v["name"]: v for v in index["variables"]}
    assert by_name["model"]["type"] == "builtins.dict" and by_name["model"]["error"] is None
    assert by_name["scores"]["type"] == "builtins.tuple" and by_name["scores"]["error"] is None
    assert by_name["absent"] == {"name": "absent", "size": None, "type": None, "error": "'absent' is not defined when the task ends"}
    assert by_name["@result"]["type"] == "builtins.str"

    code, data, headers = await raw_get(api, f"tasks/{tid}/variables/model", "alice")
    assert code == 200, data
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "attachment" in headers["Content-Disposition"]
    assert hashlib.sha256(data).hexdigest() == digest  # what the task kernel pickled, byte for byte
    assert len(data) == by_name["model"]["size"]
    assert pickle.loads(data) == {"weights": [3.0, 5.0], "name": "lin"}  # noqa: S301 - our own task's
    code, data, _ = await raw_get(api, f"tasks/{tid}/variables/scores", "alice")
    assert code == 200 and pickle.loads(data) == (0, 1, 2, 3, 4)  # noqa: S301
    code, data, _ = await raw_get(api, f"tasks/{tid}/variables/%40result", "alice")
    assert code == 200 and pickle.loads(data) == "lin"  # noqa: S301

    # a variable that came back with an error: 409 saying why; one never asked for: 404
    code, err = await call(api, "GET", f"tasks/{tid}/variables/absent", "alice")
    assert_json_error(code, err, 409, "variable-error")
    assert "'absent' is not defined" in err["message"]
    code, err = await call(api, "GET", f"tasks/{tid}/variables/cfg", "alice")
    assert_json_error(code, err, 404, "not-found")
    assert "model, scores, absent, @result" in err["message"], err

    # another user, and an admin (who sees alice's task itself), get the 404 of a task that does not exist
    assert (await call(api, "GET", f"tasks/{tid}", "admin"))[0] == 200
    for user in ("bob", "admin"):
        for path in (f"tasks/{tid}/variables", f"tasks/{tid}/variables/model", f"tasks/{tid}/variables/%40result"):
            code, data, _ = await raw_get(api, path, user)
            assert code == 404, (user, path, code)
            assert b"weights" not in data and b"lin" not in data
    code, err = await call(api, "GET", f"tasks/{tid}/variables/model", "bob")
    assert_json_error(code, err, 404, "not-found")

    # a rerun restores the same inputs (the stored task row keeps only their names)
    code, again = await call(api, "POST", f"tasks/{tid}/rerun", "alice")
    assert code == 201, again
    again = await finished(api, again["id"], "alice")
    assert again["status"] == "completed", again["error"]
    assert f"DIGEST {digest}" in await logs(api, again["id"], "alice")


async def test_variables_before_the_end_and_a_failed_task(api):
    code, task = await call(api, "POST", "tasks", "alice", {"code": "import time\ntime.sleep(30)\nx = 1", "variables_out": ["x"]})
    assert code == 201, task
    tid = task["id"]
    code, index = await call(api, "GET", f"tasks/{tid}/variables", "alice")
    assert code == 200 and index["ready"] is False and index["requested"] == ["x"], index
    code, err = await call(api, "GET", f"tasks/{tid}/variables/x", "alice")
    assert_json_error(code, err, 409, "not-ready")
    assert (await call(api, "POST", f"tasks/{tid}/cancel", "alice"))[0] == 202
    await finished(api, tid, "alice")
    code, index = await call(api, "GET", f"tasks/{tid}/variables", "alice")
    assert index["ready"] is True and index["variables"][0]["error"].startswith("not sent back: the task ended cancelled"), index

    code, task = await call(api, "POST", "tasks", "alice", {"code": "x = 1\nraise ValueError('no')", "variables_out": ["x"]})
    task = await finished(api, task["id"], "alice")
    assert task["status"] == "failed"
    code, err = await call(api, "GET", f"tasks/{task['id']}/variables/x", "alice")
    assert_json_error(code, err, 409, "variable-error")
    assert "not sent back: the task ended failed" in err["message"], err


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"variables_in": {"df": "not base64!"}}, "'variables_in.df' is not valid base64"),
        ({"variables_in": {"df": base64.b64encode(b"plain text").decode()}}, "'variables_in.df' is not a pickle"),
        ({"variables_in": {"df": ""}}, "'variables_in.df' is empty"),
        ({"variables_in": {"1df": b64(1)}}, "'1df'"),
        ({"variables_in": {"class": b64(1)}}, "'class'"),
        ({"variables_in": {"df": b64(b"x" * (2 * CAP))}}, "'variables_in.df' is"),
        ({"variables_in": {f"v{i}": b64(b"x" * (CAP - 100)) for i in range(4)}}, "'variables_in' hold"),
        ({"variables_in": {"df": 12}}, "variables_in"),
        ({"variables_out": ["ok", "not a name"]}, "'variables_out[1]'"),
        ({"variables_out": ["import"]}, "'variables_out[0]'"),
    ],
)
async def test_bad_variables_are_refused_whole(api, db_path, body, field):
    before = db_count(db_path, "tasks"), db_count(db_path, "artifacts")
    good = {"ok": b64([1, 2])}
    payload = {"code": "print(1)", **body}
    if "variables_in" in body and isinstance(body["variables_in"], dict):
        payload["variables_in"] = {**good, **body["variables_in"]}  # one good variable does not get the rest in
    code, err = await call(api, "POST", "tasks", "alice", payload)
    assert_json_error(code, err, 400, "invalid")
    assert field in err["message"], err["message"]
    assert (db_count(db_path, "tasks"), db_count(db_path, "artifacts")) == before
    code, page = await call(api, "GET", "tasks", "alice")
    assert page["tasks"] == [], page
    # in a batch too: all or nothing
    code, err = await call(api, "POST", "tasks/batch", "alice", {"tasks": [{"code": "print(2)"}, payload]})
    assert_json_error(code, err, 400, "invalid")
    assert (db_count(db_path, "tasks"), db_count(db_path, "artifacts")) == before


async def test_over_the_cap_names_the_setting(api):
    code, err = await call(api, "POST", "tasks", "alice", {"code": "1", "variables_in": {"big": b64(b"x" * (2 * CAP))}})
    assert_json_error(code, err, 400, "invalid")
    assert "max_variable_bytes" in err["message"] and "'variables_in.big'" in err["message"], err
    many = {f"v{i}": b64(b"x" * (CAP - 100)) for i in range(4)}
    code, err = await call(api, "POST", "tasks", "alice", {"code": "1", "variables_in": many})
    assert_json_error(code, err, 400, "invalid")
    assert "max_task_variable_bytes" in err["message"], err


async def test_an_input_the_task_kernel_cannot_load_fails_the_task_naming_it(api):
    import sys
    import types

    # a class of a module only this process has: pickled by reference, so the task kernel cannot import it
    module = types.ModuleType("taskrun_nowhere_module")
    exec("class Thing:\n    pass\n", module.__dict__)  # noqa: S102 - a fixed snippet
    sys.modules[module.__name__] = module
    try:
        data = pickle.dumps(module.Thing(), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        del sys.modules[module.__name__]
    code, task = await call(
        api, "POST", "tasks", "alice", {"code": "print('ran')", "variables_in": {"thing": base64.b64encode(data).decode()}}
    )
    assert code == 201, task
    task = await finished(api, task["id"], "alice")
    assert task["status"] == "failed", task
    error = task["error"]
    assert error["ename"] == "VariableError", error
    assert "--in thing: cannot unpickle it in the task kernel: ModuleNotFoundError" in error["evalue"], error
    assert "taskrun_nowhere_module" in error["evalue"]
    assert "ran" not in await logs(api, task["id"], "alice")  # the cell never ran
