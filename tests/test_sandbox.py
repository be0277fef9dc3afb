"""The optional bubblewrap sandbox (issue 19): task code cannot read the server's token or the
store, and the kernel protocol, metrics, kill semantics and durable output keep working."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from jupyter_core.paths import jupyter_runtime_dir

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")


@pytest.fixture
def taskrun_config(tmp_path):
    shared = tmp_path / "shared-out"
    shared.mkdir()
    return {"sandbox": "bwrap", "sandbox_writable_paths": [str(shared)]}


async def test_task_code_cannot_read_the_token_or_the_store(api, jp_serverapp, db_path, jp_root_dir, taskrun_config):
    token = jp_serverapp.identity_provider.token
    runtime = jupyter_runtime_dir()
    assert token and os.path.exists(db_path)
    probe = f"""
import json, os
seen = {{}}
try:
    seen["server_environ"] = open("/proc/{os.getpid()}/environ", "rb").read().decode("latin-1")
except OSError as e:
    seen["server_environ"] = type(e).__name__
try:
    seen["runtime"] = sorted(os.listdir({runtime!r}))
except OSError as e:
    seen["runtime"] = type(e).__name__
try:
    seen["store"] = len(open({db_path!r}, "rb").read())
except OSError as e:
    seen["store"] = type(e).__name__
try:
    open("/etc/taskrun-escape", "w").write("x")
    seen["write_outside"] = "written"
except OSError as e:
    seen["write_outside"] = type(e).__name__
open("inside.txt", "w").write("ok")
open({os.path.join(taskrun_config["sandbox_writable_paths"][0], "declared.txt")!r}, "w").write("ok")
seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(seen))
"""
    task = await api.run(code=probe, cwd=".")
    assert task["status"] == "completed", task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    seen = json.loads(logs.strip().splitlines()[-1])
    assert token not in logs
    assert seen["server_environ"] == "FileNotFoundError"  # the server is not in the kernel's /proc
    # the runtime folder shows only the kernel's own connection file (no jpserver-*.json, no other kernel's)
    assert len(seen["runtime"]) <= 1 and all(name.startswith("kernel-") for name in seen["runtime"]), seen["runtime"]
    assert seen["store"] == "FileNotFoundError"
    assert seen["write_outside"].endswith("Error") and not os.path.exists("/etc/taskrun-escape")
    assert (jp_root_dir / "inside.txt").read_text() == "ok"  # its working folder is writable
    assert max(seen["pids"]) < 100  # its own PID namespace
    # metrics still measured from the host
    assert task["metrics"]["peak_rss"] > 10 * 2**20


async def test_sandboxed_kill_and_durable_output(api):
    # a daemon that double-forks and leaves the session is gone with the task's PID namespace
    code = (
        "import os, subprocess, signal\n"
        "subprocess.Popen(['sh', '-c', 'setsid sh -c \"sleep 300\" &'])\n"
        "print('before death')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    task = await api.run(code=code)
    assert task["status"] == "failed" and task["exit_code"] == -9, task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs.count("before death\n") == 1
    import psutil

    sleepers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "300"]]
    for _ in range(50):
        sleepers = [p for p in sleepers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not sleepers:
            break
        import asyncio

        await asyncio.sleep(0.1)
    assert not sleepers, "a daemon escaped the sandbox"
    # cancel of a running sandboxed task
    t = await api.submit(code="import time\ntime.sleep(60)")
    await api.wait_status(t["id"], "running")
    code_, _, _ = await api.call("POST", f"tasks/{t['id']}/cancel")
    assert code_ == 202
    assert (await api.wait(t["id"], 30))["status"] == "cancelled"
