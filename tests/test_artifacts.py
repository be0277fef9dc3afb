"""Files as artifacts (issue 15, part 3): a task's ``outputs`` collected when it ends (completed or
failed), listed at ``GET …/files`` and downloaded byte-identical at ``GET …/files/{path}``; caps
refuse a file with the reason, never cut it; paths are contained at submission, at collection
(symlinks) and at download; owner-only; ``inputs`` are checked and read in place.

A real in-process server where the user comes from a header (``tests/test_chores_server.py``):
these tests run as "alice", and "bob" is another user. Real kernels, real SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .helpers import assert_json_error, task_count, wait_log
from .test_chores_server import jp_server_config  # noqa: F401  (the multi-user server)

ALICE = {"X-Test-User": "alice"}
BOB = {"X-Test-User": "bob"}

#: every byte value, twice, then some: binary content that no text handling survives
BLOB = bytes(range(256)) * 2 + b"\x00\r\n\x1a\xff" + hashlib.sha256(b"x").digest()
CSV = "a,b\r\n1,\u00e9\n"


@pytest.fixture
def jp_auth_header():
    """``api`` (jp_fetch) calls go out as alice."""
    return dict(ALICE)


async def raw_get(api, path: str, headers: dict[str, str] | None = None):
    """A GET of a path exactly as written (no client-side quoting or normalisation)."""
    url = f"http://127.0.0.1:{api.port}{api.base_url}taskrun/api/{path}"
    req = HTTPRequest(url, headers=ALICE if headers is None else headers, request_timeout=60)
    return await AsyncHTTPClient().fetch(req, raise_error=False)


def writer_code(files: dict[str, bytes], then: str = "") -> str:
    """Task code that writes these files (relative to its cwd), then runs ``then``."""
    lines = ["import base64, os"]
    for rel, data in files.items():
        folder = os.path.dirname(rel)
        if folder:
            lines.append(f"os.makedirs({folder!r}, exist_ok=True)")
        lines.append(f"open({rel!r}, 'wb').write(base64.b64decode({base64.b64encode(data).decode()!r}))")
    return "\n".join(lines) + "\n" + then


async def listing(api, task_id: str) -> dict:
    code, body, _ = await api.call("GET", f"tasks/{task_id}/files")
    assert code == 200, body
    return body


async def test_outputs_are_collected_and_downloaded_byte_identical(api, taskrun):
    files = {
        "results/a.csv": CSV.encode("utf-8"),
        "results/b.csv": b"x\n",
        "results/skip.txt": b"not matched by the glob",
        "model.pt": BLOB,
        "out/nested/deep/blob.bin": BLOB[::-1],
        "out/nested/pic.png": b"\x89PNG\r\n\x1a\n" + BLOB,
    }
    outputs = ["results/*.csv", "model.pt", "out", "nothing/*.txt"]
    task = await api.run(code=writer_code(files, "print('wrote')"), outputs=outputs, name="files-ok")
    assert task["status"] == "completed", task["error"]
    body = await listing(api, task["id"])
    assert body["task_id"] == task["id"] and body["outputs"] == outputs and body["collected"] is True
    kept = {f["path"]: f for f in body["files"]}
    expected = {k: v for k, v in files.items() if k != "results/skip.txt"}
    assert set(kept) == set(expected)
    for path, data in expected.items():
        assert kept[path]["size"] == len(data)
        assert kept[path]["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["refused"] == []
    assert body["missing"] == ["nothing/*.txt"]
    types = {p: f["content_type"] for p, f in kept.items()}
    assert types["results/a.csv"] == "text/csv" and types["out/nested/pic.png"] == "image/png"
    assert types["out/nested/deep/blob.bin"] == "application/octet-stream"

    for path, data in expected.items():
        code, got, headers = await api.call("GET", f"tasks/{task['id']}/files/{path}")
        resp = await raw_get(api, f"tasks/{task['id']}/files/{path}")
        assert resp.code == 200 and code == 200
        assert resp.body == data, path  # byte-identical, whatever the bytes
        assert resp.headers["Content-Type"].split(";")[0] == kept[path]["content_type"]
        assert resp.headers["Content-Disposition"].startswith(f'attachment; filename="{os.path.basename(path)}"')
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()

    # announced by an ``artifacts`` event carrying the manifest, before the terminal status
    events = await api.events(task["id"])
    types_seq = [e["type"] for e in events]
    art = [e for e in events if e["type"] == "artifacts"]
    assert len(art) == 1 and art[0]["data"]["missing"] == ["nothing/*.txt"]
    assert {f["path"] for f in art[0]["data"]["files"]} == set(expected)
    last_status = max(i for i, t in enumerate(types_seq) if t == "status")
    assert types_seq.index("artifacts") < last_status


async def test_a_failed_task_still_collects_its_outputs(api):
    code = writer_code({"partial/log.bin": BLOB}, "raise RuntimeError('boom after writing')")
    task = await api.run(code=code, outputs=["partial/*"])
    assert task["status"] == "failed" and task["error"]["ename"] == "RuntimeError"
    body = await listing(api, task["id"])
    assert [(f["path"], f["size"]) for f in body["files"]] == [("partial/log.bin", len(BLOB))]
    resp = await raw_get(api, f"tasks/{task['id']}/files/partial/log.bin")
    assert resp.code == 200 and resp.body == BLOB


async def test_a_task_without_outputs_lists_nothing_collected(api):
    task = await api.run(code="open('x.txt', 'w').write('x')")
    body = await listing(api, task["id"])
    assert body == {"task_id": task["id"], "outputs": [], "collected": False, "files": [], "refused": [], "missing": []}
    resp = await raw_get(api, f"tasks/{task['id']}/files/x.txt")
    assert resp.code == 404


CAPS = {"max_artifact_bytes": 1000, "max_task_artifact_bytes": 2500, "max_artifacts": 3}


@pytest.mark.parametrize("taskrun_config", [CAPS], indirect=True)
async def test_caps_refuse_with_the_reason_and_never_cut(api, db_path):
    files = {
        "caps/1_a.bin": b"a" * 1000,  # exactly the per-file cap: kept
        "caps/2_b.bin": b"b" * 1000,  # 2000 in all: kept
        "caps/3_big.bin": b"c" * 1001,  # one byte over the per-file cap
        "caps/4_c.bin": b"d" * 600,  # 2600 > 2500: past the per-task cap
        "caps/5_d.bin": b"e" * 10,  # still fits: the third file
        "caps/6_e.bin": b"f" * 10,  # a fourth file: over the file count
    }
    task = await api.run(code=writer_code(files), outputs=["caps/*"])
    assert task["status"] == "completed", task["error"]
    body = await listing(api, task["id"])
    assert [(f["path"], f["size"]) for f in body["files"]] == [("caps/1_a.bin", 1000), ("caps/2_b.bin", 1000), ("caps/5_d.bin", 10)]
    refused = {f["path"]: f for f in body["refused"]}
    assert set(refused) == {"caps/3_big.bin", "caps/4_c.bin", "caps/6_e.bin"}
    assert refused["caps/3_big.bin"]["size"] == 1001 and "per-file cap of 1000 bytes" in refused["caps/3_big.bin"]["reason"]
    assert "max_artifact_bytes" in refused["caps/3_big.bin"]["reason"]
    assert refused["caps/4_c.bin"]["size"] == 600 and "per-task cap of 2500 bytes" in refused["caps/4_c.bin"]["reason"]
    assert "max_task_artifact_bytes" in refused["caps/4_c.bin"]["reason"]
    assert refused["caps/6_e.bin"]["size"] == 10 and "more than 3 files" in refused["caps/6_e.bin"]["reason"]
    for path in refused:
        resp = await raw_get(api, f"tasks/{task['id']}/files/{path}")
        assert resp.code == 404, path
    for f in body["files"]:
        resp = await raw_get(api, f"tasks/{task['id']}/files/{f['path']}")
        assert resp.body == files[f["path"]]  # whole, not cut
    # nothing of a refused file is in the database either
    with sqlite3.connect(db_path) as db:
        names = {n for (n,) in db.execute("SELECT name FROM artifacts WHERE task_id=?", (task["id"],))}
    assert {n for n in names if n.startswith("file:")} == {"file:" + f["path"] for f in body["files"]}


@pytest.mark.parametrize(
    "outputs, index",
    [
        (["/etc/passwd"], 0),
        (["ok.txt", "../secret.txt"], 1),
        (["a/../../b"], 0),
        (["ok/*", "x/..", "y"], 1),
        (["~/x"], 0),
        ([""], 0),
        (["a\x00b"], 0),
    ],
)
async def test_outputs_outside_the_cwd_are_refused_at_submission(api, outputs, index):
    before = await task_count(api)
    code, body, _ = await api.call("POST", "tasks", {"code": "1", "outputs": outputs})
    assert_json_error(code, body, 400)
    assert f"outputs[{index}]" in body["message"], body
    assert await task_count(api) == before  # nothing stored


async def test_symlinks_out_of_the_cwd_are_refused_at_collection(api, taskrun, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the server's secret")
    (outside / "more.txt").write_text("more secrets")
    root = os.path.realpath(taskrun.root_dir)
    assert not str(outside.resolve()).startswith(root + os.sep)
    code = f"""
import os
os.makedirs('links', exist_ok=True)
os.symlink({str(outside / "secret.txt")!r}, 'links/leak.txt')
os.symlink({str(outside)!r}, 'links/dir')
open('links/real.txt', 'w').write('mine')
os.symlink('real.txt', 'links/inner.txt')
os.mkfifo('links/pipe')  # reading it would block: refused, not opened
"""
    task = await api.run(code=code, outputs=["links", "links/dir/*.txt"], cwd="")
    assert task["status"] == "completed", task["error"]
    body = await listing(api, task["id"])
    assert {f["path"]: f["size"] for f in body["files"]} == {"links/inner.txt": 4, "links/real.txt": 4}
    refused = {f["path"]: f["reason"] for f in body["refused"]}
    assert refused.pop("links/pipe") == "not a regular file"
    assert set(refused) == {"links/leak.txt", "links/dir", "links/dir/more.txt", "links/dir/secret.txt"}
    assert all("symlink out of the task's working folder" in r for r in refused.values()), refused
    for path in refused:
        resp = await raw_get(api, f"tasks/{task['id']}/files/{path}")
        assert resp.code == 404 and b"the server's secret" not in resp.body and b"more secrets" not in resp.body
    resp = await raw_get(api, f"tasks/{task['id']}/files/links/inner.txt")
    assert resp.body == b"mine"


async def test_download_path_traversal_is_refused(api, taskrun):
    secret = os.path.join(taskrun.root_dir, "top-secret.txt")
    with open(secret, "w") as f:
        f.write("TOP SECRET")
    os.makedirs(os.path.join(taskrun.root_dir, "sub"), exist_ok=True)
    task = await api.run(code="open('kept.txt', 'w').write('kept')", outputs=["kept.txt"], cwd="sub")
    assert (await listing(api, task["id"]))["files"][0]["path"] == "kept.txt"
    tid = task["id"]
    attempts = [
        "../top-secret.txt",
        "../../../../etc/passwd",
        "%2e%2e/top-secret.txt",
        "%2E%2E%2Ftop-secret.txt",
        "..%2f..%2fetc%2fpasswd",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "kept.txt/../kept.txt",
        "./kept.txt",
        "%252e%252e/top-secret.txt",
        "kept.txt%00",
        "..\\top-secret.txt",
    ]
    for path in attempts:
        resp = await raw_get(api, f"tasks/{tid}/files/{path}")
        assert 400 <= resp.code < 500, (path, resp.code)
        assert b"TOP SECRET" not in (resp.body or b"") and b"root:" not in (resp.body or b""), path
    assert (await raw_get(api, f"tasks/{tid}/files/kept.txt")).body == b"kept"


async def test_files_are_their_owners_only(api):
    task = await api.run(code=writer_code({"mine.bin": BLOB}), outputs=["mine.bin"])
    tid = task["id"]
    for path in (f"tasks/{tid}/files", f"tasks/{tid}/files/mine.bin", f"tasks/{tid}/values"):
        resp = await raw_get(api, path, BOB)
        assert resp.code == 404, path
        assert BLOB not in (resp.body or b"")
        assert (await raw_get(api, path, ALICE)).code == 200
    resp = await raw_get(api, f"tasks/{tid}/files", {})
    assert resp.code in (401, 403)


async def test_inputs_are_checked_at_submission_and_read_in_place(api, taskrun):
    root = taskrun.root_dir
    os.makedirs(os.path.join(root, "work", "data", "sub"), exist_ok=True)
    with open(os.path.join(root, "work", "data", "in.bin"), "wb") as f:
        f.write(BLOB)
    with open(os.path.join(root, "work", "data", "sub", "x.txt"), "w") as f:
        f.write("x")
    with open(os.path.join(root, "elsewhere.txt"), "w") as f:
        f.write("elsewhere")
    before = await task_count(api)
    for inputs, index, reason in [
        (["work/data", "work/nope.csv"], 1, "path-not-found"),
        (["elsewhere.txt"], 0, "path-not-allowed"),  # under the root, but not inside the task's cwd
        (["../etc/passwd"], 0, None),
        (["/etc/passwd"], 0, None),
    ]:
        code, body, _ = await api.call("POST", "tasks", {"code": "1", "cwd": "work", "inputs": inputs})
        assert_json_error(code, body, 400, reason)
        assert f"inputs[{index}]" in body["message"], body
    assert await task_count(api) == before
    code = "import shutil\nshutil.copy('data/in.bin', 'copy.bin')\nprint(open('data/sub/x.txt').read())"
    task = await api.run(code=code, cwd="work", inputs=["work/data"], outputs=["copy.bin"])
    assert task["status"] == "completed", task["error"]
    resp = await raw_get(api, f"tasks/{task['id']}/files/copy.bin")
    assert resp.body == BLOB


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancelled_or_timed_out_task_still_collects(api, how):
    code = writer_code({"early.bin": BLOB}, "print('written', flush=True)\nimport time\ntime.sleep(60)")
    extra = {"timeout": 3} if how == "timeout" else {}
    task = await api.submit(code=code, outputs=["early.bin"], **extra)
    await wait_log(api, task["id"], "written")
    if how == "cancel":
        code, body, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
        assert code == 202, body
    task = await api.wait(task["id"])
    assert task["status"] == ("cancelled" if how == "cancel" else "timed_out")
    body = await listing(api, task["id"])
    assert [(f["path"], f["sha256"]) for f in body["files"]] == [("early.bin", hashlib.sha256(BLOB).hexdigest())]
    assert (await raw_get(api, f"tasks/{task['id']}/files/early.bin")).body == BLOB


async def test_file_names_with_spaces_unicode_and_url_characters(api):
    import urllib.parse

    name = "out/na\u00efve r\u00e9sum\u00e9 #1 ?&%.txt"
    task = await api.run(code=writer_code({name: b"caf\xc3\xa9"}), outputs=["out/*"])
    body = await listing(api, task["id"])
    assert [f["path"] for f in body["files"]] == [name]
    resp = await raw_get(api, f"tasks/{task['id']}/files/{urllib.parse.quote(name)}")
    assert resp.code == 200 and resp.body == b"caf\xc3\xa9"
    assert resp.headers["Content-Type"].startswith("text/plain")
    disposition = resp.headers["Content-Disposition"]
    assert disposition.endswith("filename*=UTF-8''" + urllib.parse.quote(os.path.basename(name), safe=""))
    assert disposition.isascii()


async def test_the_values_change_feed_entry_is_its_owners_only(api):
    code = "from jupyter_taskrun import record\nrecord('accuracy', 0.5)"
    task = await api.run(code=code)
    assert task["values"] == {"accuracy": 0.5}
    code_b, other, _ = await api.call("POST", "tasks", {"code": "print('bob')"}, headers=BOB)
    assert code_b == 201
    await api.wait(task["id"])

    def until_status_of(task_id):
        return lambda frames: any(
            f["event"] == "status" and f["data"]["task_id"] == task_id and f["data"]["data"]["status"] == "completed" for f in frames
        )

    mine = await api.sse("events", params={"after": 0}, stop=until_status_of(task["id"]), timeout=60)
    values = [f["data"] for f in mine if f["event"] == "values"]
    assert values and values[-1]["task_id"] == task["id"] and values[-1]["data"]["values"] == {"accuracy": 0.5}
    theirs = await api.sse("events", params={"after": 0}, headers=BOB, stop=until_status_of(other["id"]), timeout=60)
    assert all(f["data"]["task_id"] != task["id"] for f in theirs if f.get("data")), theirs
