"""``jupyter taskrun`` run as a real subprocess against a real ``jupyter server`` subprocess."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import uuid

import nbformat
import pytest

from jupyter_taskrun.cli import _Console
from jupyter_taskrun.client import TaskRunClient

try:
    from ._server import JupyterServer, free_port
except ImportError:  # tests/ is not a package
    from _server import JupyterServer, free_port

HEX_ID = re.compile(r"^[0-9a-zA-Z_-]{6,}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = JupyterServer(tmp_path_factory.mktemp("taskrun-cli"))
    srv.start()
    try:
        ok, detail = srv.taskrun_ready()
        if not ok:
            pytest.fail(f"the taskrun API is not available: {detail}\n{srv.log_tail()}")
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server) -> TaskRunClient:
    return TaskRunClient(server.url, server.token)


def run(server, *args, auth=True, env=None, cwd=None, merge=False, input=None, timeout=180):
    """Run the CLI; with ``merge`` stdout and stderr share one pipe (to check their interleaving)."""
    cmd = [sys.executable, "-m", "jupyter_taskrun.cli"]
    if auth:
        cmd += ["--url", server.url, "--token", server.token]
    cmd += list(args)
    return subprocess.run(
        cmd,
        env=env or server.env,
        cwd=cwd or server.base,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        input=input,
        text=True,
        timeout=timeout,
    )


def task_id_of(proc) -> str:
    first = proc.stdout.splitlines()[0].strip()
    assert HEX_ID.match(first), proc.stdout
    return first


def show(server, task_id) -> dict:
    proc = run(server, "show", task_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_clean_error(proc, *needles):
    """A refused request: exit 1, one line on stderr, no Python traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def new_tag() -> str:
    return "c" + uuid.uuid4().hex[:10]


# ---------------------------------------------------------------------------
# submit
# ---------------------------------------------------------------------------


def test_submit_code_wait_success(server):
    tag = new_tag()
    proc = run(server, "submit", "-c", "print('hi')", "--wait", "--name", "cli-ok", "--tag", tag)
    assert proc.returncode == 0, proc.stderr
    task_id = task_id_of(proc)
    assert "completed" in proc.stderr
    task = show(server, task_id)
    assert task["status"] == "completed" and task["name"] == "cli-ok" and task["tags"] == [tag]
    logs = run(server, "logs", task_id)
    assert logs.returncode == 0 and logs.stdout == "hi\n"


def test_submit_without_wait_prints_id_and_json(server, client):
    proc = run(server, "submit", "-c", "print('later')")
    assert proc.returncode == 0, proc.stderr
    task_id = task_id_of(proc)
    assert proc.stdout.strip() == task_id
    assert client.wait(task_id, timeout=120)["status"] == "completed"

    proc = run(server, "submit", "-c", "pass", "--json")
    assert proc.returncode == 0, proc.stderr
    task = json.loads(proc.stdout)
    assert task["source_kind"] == "code"
    client.wait(task["id"], timeout=120)

    proc = run(server, "submit", "-", "--wait", input="print('from stdin')\n")
    assert proc.returncode == 0, proc.stderr
    assert client.logs(task_id_of(proc)) == "from stdin\n"


def test_submit_wait_failure_exits_1(server):
    proc = run(server, "submit", "-c", "x = 1\n1 / 0", "--wait")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "failed" in proc.stderr and "ZeroDivisionError" in proc.stderr
    assert "jupyter_taskrun" not in proc.stderr  # the task's traceback, not the CLI's
    assert "\x1b[" not in proc.stderr  # colours stripped when not a terminal


def test_submit_follow_prints_logs_in_order(server):
    code = (
        "import sys, time\n"
        "print('one', flush=True)\n"
        "time.sleep(0.3)\n"
        "print('two', file=sys.stderr, flush=True)\n"
        "time.sleep(0.3)\n"
        "print('three', flush=True)\n"
        "6 * 7\n"
    )
    proc = run(server, "submit", "-c", code, "--follow", merge=True)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    positions = [out.index(s) for s in ("submitted", "one\n", "two\n", "three\n", "42\n", "completed")]
    assert positions == sorted(positions), out
    assert out.count("one\n") == 1 and out.count("three\n") == 1

    # stdout carries the task's stdout; stderr its stderr and the CLI's own messages
    proc = run(server, "submit", "-c", code, "--follow")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "one\nthree\n42\n"
    assert "two\n" in proc.stderr and "completed" in proc.stderr


PROGRESS_CODE = (
    "import time\n"
    "from jupyter_taskrun import progress\n"
    "for i in range(1, 5):\n"
    "    progress(i, 4, 'step')\n"
    "    time.sleep(0.4)\n"
    "print('done', flush=True)\n"
)


def test_submit_follow_shows_progress_as_lines_when_not_a_terminal(server):
    proc = run(server, "submit", "-c", PROGRESS_CODE, "--follow")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    bars = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert len(bars) >= 2, proc.stderr
    assert bars[-1] == "progress: [##############################] 100% 4/4 step"
    assert "\r" not in proc.stderr


def test_submit_follow_draws_a_live_bar_on_a_terminal(server):
    import os
    import pty
    import threading

    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "jupyter_taskrun.cli", "--url", server.url, "--token", server.token]
    proc = subprocess.Popen(
        [*cmd, "submit", "-c", PROGRESS_CODE, "--follow"],
        env=server.env, stdout=subprocess.PIPE, stderr=slave, text=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []

    def read_tty():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the CLI closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_tty, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=180)
    reader.join(10)
    os.close(master)
    tty = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty
    assert stdout == "done\n"
    assert "\r\x1b[K[##############################] 100% 4/4 step" in tty
    assert "progress: " not in tty  # a redrawn bar, not lines
    # the bar is cleared at the end, before the final status line
    after_clear = tty.rsplit("\r\x1b[K", 1)[1].strip()
    assert after_clear.startswith("taskrun: task ") and "completed" in after_clear, after_clear


def test_submit_follow_failure_exits_1(server):
    proc = run(server, "submit", "-c", "print('before', flush=True)\nraise ValueError('boom')", "--follow", merge=True)
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert out.index("before") < out.index("ValueError") < out.rindex("failed")
    assert "boom" in out


def test_submit_files_under_root_by_path_and_outside_by_content(server, tmp_path):
    (server.root / "jobs").mkdir(exist_ok=True)
    inside = server.root / "jobs" / "job.py"
    inside.write_text("import os\nprint('inside', os.path.basename(__file__))\n")
    proc = run(server, "submit", str(inside), "--wait")
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["source_kind"] == "path" and task["path"] == "jobs/job.py"
    assert run(server, "logs", task["id"]).stdout == "inside job.py\n"

    outside = tmp_path / "outside.py"
    outside.write_text("print('outside')\n")
    proc = run(server, "submit", str(outside), "--wait")
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["source_kind"] == "code" and task["name"] == "outside.py"
    assert run(server, "logs", task["id"]).stdout == "outside\n"

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('nb cell')")]
    nb_outside = tmp_path / "outside.ipynb"
    nbformat.write(nb, nb_outside)
    proc = run(server, "submit", str(nb_outside), "--wait")
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["source_kind"] == "notebook"
    assert run(server, "logs", task["id"]).stdout == "nb cell\n"

    nb_inside = server.root / "jobs" / "inside.ipynb"
    nbformat.write(nb, nb_inside)
    # relative FILE argument, resolved against the CLI's cwd
    proc = run(server, "submit", "jobs/inside.ipynb", "--wait", cwd=server.root)
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["source_kind"] == "path" and task["path"] == "jobs/inside.ipynb"


def test_submit_script_arguments_and_exit_code(server):
    (server.root / "train.py").write_text("import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)\n")
    proc = run(server, "submit", str(server.root / "train.py"), "--wait", "--", "--lr", "0.1")
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["exit_code"] == 0
    assert run(server, "logs", task["id"]).stdout == "['--lr', '0.1']\n"
    # a failed script's own exit status comes back, as with python FILE
    proc = run(server, "submit", str(server.root / "train.py"), "--follow", "--", "--lr", "7")
    assert proc.returncode == 7, proc.stderr
    assert "['--lr', '7']" in proc.stdout


def test_submit_options(server):
    code = "import os\nprint(x + 1, y, os.environ['FOO'])\n"
    proc = run(
        server,
        "submit", "-c", code,
        "--param", "x=41", "--param", "y=hello",
        "--env", "FOO=bar=baz",
        "--tag", "a", "--tag", "b",
        "--priority", "5", "--timeout", "120", "--name", "opts",
        "--kernel", "python3",
        "--wait",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    task = show(server, task_id_of(proc))
    assert task["tags"] == ["a", "b"] and task["priority"] == 5 and task["name"] == "opts"
    assert task["kernel_name"] == "python3"
    assert run(server, "logs", task["id"]).stdout == "42 hello bar=baz\n"


def test_submit_task_timeout_exits_1(server):
    proc = run(server, "submit", "-c", "import time\ntime.sleep(60)", "--timeout", "2", "--wait")
    assert proc.returncode == 1
    assert "timed_out" in proc.stderr


# ---------------------------------------------------------------------------
# list / show / logs / cancel / rm / rerun
# ---------------------------------------------------------------------------


def test_list_and_show(server):
    tag = new_tag()
    ids = []
    for i in range(2):
        proc = run(server, "submit", "-c", f"print({i})", "--name", f"listed-{i}", "--tag", tag, "--wait")
        assert proc.returncode == 0, proc.stderr
        ids.append(task_id_of(proc))

    proc = run(server, "list", "--tag", tag, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [t["id"] for t in json.loads(proc.stdout)] == ids[::-1]

    proc = run(server, "list", "--tag", tag)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert lines[1].startswith(ids[1]) and lines[2].startswith(ids[0])
    assert "completed" in lines[1] and tag in lines[1] and "listed-1" in lines[1]

    assert len(json.loads(run(server, "list", "--tag", tag, "--limit", "1", "--json").stdout)) == 1
    assert json.loads(run(server, "list", "--tag", tag, "--status", "failed", "--json").stdout) == []
    both = run(server, "list", "--tag", tag, "--status", "failed", "--status", "completed", "--json")
    assert len(json.loads(both.stdout)) == 2
    named = json.loads(run(server, "list", "--tag", tag, "--name", "listed-0", "--json").stdout)
    assert [t["id"] for t in named] == [ids[0]]
    empty = run(server, "list", "--tag", new_tag())
    assert empty.returncode == 0 and empty.stdout == ""

    proc = run(server, "show", ids[0])
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert fields["id"].strip() == ids[0]
    assert fields["status"].strip() == "completed"
    assert fields["name"].strip() == "listed-0"
    assert tag in fields["tags"]


def test_logs_follow_and_streams(server, client):
    code = (
        "import sys, time\n"
        "for i in range(5):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    task = client.submit(code)
    proc = run(server, "logs", task["id"], "--follow")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(f"out {i}\n" for i in range(5))
    assert "".join(f"err {i}\n" for i in range(5)) in proc.stderr

    proc = run(server, "logs", task["id"], "--follow", "--stream", "stderr")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "".join(f"err {i}\n" for i in range(5))
    proc = run(server, "logs", task["id"], "--stream", "stdout")
    assert proc.returncode == 0 and proc.stdout == "".join(f"out {i}\n" for i in range(5))
    proc = run(server, "logs", task["id"])
    assert sorted(proc.stdout.splitlines()) == sorted([f"out {i}" for i in range(5)] + [f"err {i}" for i in range(5)])


def test_cancel_rm_and_conflicts(server, client):
    task = client.submit("import time\ntime.sleep(120)")
    deadline = time.monotonic() + 60
    while client.get(task["id"])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert_clean_error(run(server, "rm", task["id"]), "409")  # still running

    proc = run(server, "cancel", task["id"])
    assert proc.returncode == 0, proc.stderr
    assert "cancel requested" in proc.stdout

    follow = run(server, "logs", task["id"], "--follow")
    assert follow.returncode == 1  # cancelled: not a success
    assert client.get(task["id"])["status"] == "cancelled"

    assert_clean_error(run(server, "cancel", task["id"]), "409")

    proc = run(server, "rm", task["id"])
    assert proc.returncode == 0, proc.stderr
    assert_clean_error(run(server, "show", task["id"]), "404")
    assert_clean_error(run(server, "logs", task["id"]), "404")


def test_rerun(server, client):
    proc = run(server, "submit", "-c", "print('once more')", "--wait")
    first = task_id_of(proc)
    proc = run(server, "rerun", first, "--wait")
    assert proc.returncode == 0, proc.stderr
    second = task_id_of(proc)
    assert second != first
    assert client.get(second)["rerun_of"] == first
    assert client.logs(second) == "once more\n"

    proc = run(server, "rerun", first, "--follow", merge=True)
    assert proc.returncode == 0 and "once more" in proc.stdout


def test_status_command(server):
    proc = run(server, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "capacity" in json.loads(proc.stdout)


# ---------------------------------------------------------------------------
# Errors and discovery
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["submit"],
        ["submit", "-c", "1", "x.py"],
        ["submit", "does-not-exist.py"],
        ["submit", "notes.txt"],
        ["submit", "-c", "1", "--param", "novalue"],
        ["submit", "-c", "1", "--env", "=x"],
        ["submit", "-c", "1", "--timeout", "-3"],
        ["list", "--status", "bogus"],
        ["show"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(server, args):
    proc = run(server, *args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_http_errors_are_one_line(server):
    assert_clean_error(run(server, "show", "0" * 32), "404")
    assert_clean_error(run(server, "submit", "-c", "1", "--kernel", "no-such-kernel"))
    proc = run(server, "list", auth=False, env={**server.env, "JUPYTER_TASKRUN_URL": server.url,
                                                "JUPYTER_TASKRUN_TOKEN": "wrong"})  # fmt: skip
    assert proc.returncode == 1 and ("403" in proc.stderr or "401" in proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run(server, "--url", f"http://127.0.0.1:{free_port()}/", "--token", "x", "list", auth=False)
    assert_clean_error(proc, "cannot reach")


def test_cancel_and_rm_several_ids_report_each(server):
    proc = run(server, "rm", "0" * 32, "1" * 32)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr


def test_discovery_from_environment_and_runtime_info(server, tmp_path):
    env = {**server.env, "JUPYTER_TASKRUN_URL": server.url, "JUPYTER_TASKRUN_TOKEN": server.token}
    proc = run(server, "status", auth=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    # no URL at all: the running server's runtime info (server.env points at its runtime dir)
    proc = run(server, "status", "--json", auth=False, cwd=server.root)
    assert proc.returncode == 0, proc.stderr
    # --url/--token also work after the command name
    proc = run(server, "status", "--url", server.url, "--token", server.token, auth=False)
    assert proc.returncode == 0, proc.stderr

    empty = tmp_path / "no-servers"
    empty.mkdir()
    proc = run(server, "status", auth=False, env={**server.env, "JUPYTER_RUNTIME_DIR": str(empty)}, cwd=tmp_path)
    assert_clean_error(proc, "no Jupyter server found")


@pytest.mark.skipif(shutil.which("jupyter-taskrun") is None, reason="console script not installed")
def test_jupyter_taskrun_console_script(server):
    proc = subprocess.run(
        ["jupyter", "taskrun", "--url", server.url, "--token", server.token, "status"],
        env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------
# The live progress bar (pure rendering; the CLI tests above cover the wiring)
# ---------------------------------------------------------------------------


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_stays_out_of_the_logs_way():
    out, err = io.StringIO(), _TTY()
    console = _Console(out, err)
    console.progress(1, 4, "loading")
    assert err.getvalue().endswith("[########......................]  25% 1/4 loading")
    console.write("a log line\n", "stderr")
    # the bar was cleared before the log line, then redrawn after it
    text = err.getvalue()
    assert text.index("\r\x1b[K" + "a log line\n") > 0
    assert text.endswith("25% 1/4 loading")
    console.write("partial", "stderr")
    console.progress(2, 4)
    assert err.getvalue().endswith("partial")  # never drawn over an unfinished line
    console.write(" done\n", "stderr")
    assert err.getvalue().endswith("50% 2/4")
    console.finish()
    assert err.getvalue().endswith("\r\x1b[K")


def test_progress_plain_lines_when_not_a_terminal():
    out, err = io.StringIO(), io.StringIO()
    console = _Console(out, err)
    console.progress(1, 2, "half")
    console.progress(1, 2, "half")  # unchanged: not repeated
    console.progress(2, 2, "done")  # the end is always shown
    lines = err.getvalue().splitlines()
    assert lines == [
        "progress: [###############...............]  50% 1/2 half",
        "progress: [##############################] 100% 2/2 done",
    ]
    assert "\r" not in err.getvalue()
