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

from jupyter_taskrun.cli_render import Console, status_lines
from jupyter_taskrun.client import TaskRunClient, TaskRunHTTPError
from jupyter_taskrun.client.resolve import AmbiguousTaskRef, NoSuchTask, TaskRefError, resolve_task

try:
    from ._server import free_port, taskrun_server
except ImportError:  # tests/ is not a package
    from _server import free_port, taskrun_server

HEX_ID = re.compile(r"^[0-9a-zA-Z_-]{6,}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with taskrun_server(tmp_path_factory.mktemp("taskrun-cli")) as srv:
        yield srv


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


TQDM_SCRIPT = "import time\nfrom tqdm import tqdm\nfor i in tqdm(range(20), desc='train'):\n    time.sleep(0.05)\nprint('done')\n"


def visible_lines(text: str) -> list[str]:
    """The lines as a terminal leaves them: what follows a line's last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def test_submit_follow_with_tqdm_when_not_a_terminal(server):
    """The task's own bar is the only bar: no 'progress:' lines of the CLI's, 100% shown once."""
    pytest.importorskip("tqdm")
    cmd = [sys.executable, "-m", "jupyter_taskrun.cli", "--url", server.url, "--token", server.token]
    # bytes: text mode would turn the bar's carriage returns into newlines
    proc = subprocess.run([*cmd, "submit", "-c", TQDM_SCRIPT, "--follow"], env=server.env, capture_output=True, timeout=180)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err
    assert out == "done\n" and "progress: " not in err
    assert "\rtrain: 100%|" in err
    lines = visible_lines(err)
    assert len([line for line in lines if "100%" in line]) == 1, lines
    assert lines[-2].startswith("taskrun: task ") and "completed" in lines[-2], lines  # not glued to the bar


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
    assert_clean_error(run(server, "show", task["id"]), "no task", task["id"])
    assert_clean_error(run(server, "logs", task["id"]), "no task", task["id"])


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
    proc = run(server, "status")
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert list(fields)[:4] == ["server", "runner", "tasks", "kernels"], proc.stdout
    assert "running" in fields["tasks"] and "queued" in fields["tasks"]
    assert "{" not in proc.stdout  # words, not a dict's repr


def test_task_references_are_prefixes_or_names(server, client, tmp_path):
    """Every command that takes a task accepts what %taskrun accepts (issue 13)."""
    name = f"ref-{new_tag()}"
    proc = run(server, "submit", "-c", "print('by ref')", "--name", name, "--wait")
    assert proc.returncode == 0, proc.stderr
    task_id = task_id_of(proc)
    prefix = task_id[:8]

    logs = run(server, "logs", prefix)
    assert logs.returncode == 0 and logs.stdout == "by ref\n", (logs.stdout, logs.stderr)
    assert run(server, "logs", name).stdout == "by ref\n"
    assert show(server, prefix)["id"] == task_id and show(server, name)["id"] == task_id
    assert show(server, prefix.upper())["id"] == task_id
    waited = run(server, "wait", name)
    assert waited.returncode == 0 and "completed" in waited.stderr

    proc = run(server, "download", prefix, "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    saved = tmp_path / f"{name}-{prefix}.executed.ipynb"
    assert proc.stdout.strip() == str(saved)
    assert nbformat.read(saved, as_version=4).cells[0].outputs[0]["text"] == "by ref\n"
    assert_clean_error(run(server, "download", prefix, "-o", str(saved)), "exists")  # not overwritten
    assert run(server, "download", prefix, "-o", str(saved), "--force").returncode == 0
    assert json.loads(run(server, "download", name, "-o", "-").stdout)["cells"]

    # a name run twice means its newest run
    rerun = run(server, "rerun", name, "--wait")
    assert rerun.returncode == 0, rerun.stderr
    newest = task_id_of(rerun)
    assert show(server, name)["id"] == newest

    assert_clean_error(run(server, "logs", "no-such-task-name"), "no task 'no-such-task-name'")
    proc = run(server, "rm", prefix, newest[:10], "no-such-task-name")
    assert proc.returncode == 1 and proc.stdout.count("deleted") == 2, (proc.stdout, proc.stderr)
    assert "no-such-task-name" in proc.stderr and "Traceback" not in proc.stderr


def test_wait_command_timeout(server, client):
    task = client.submit("import time\ntime.sleep(60)", name=f"slow-{new_tag()}")
    proc = run(server, "wait", task["id"][:8], "--timeout", "1")
    assert proc.returncode == 1 and "did not finish within 1 s" in proc.stderr, proc.stderr
    client.cancel(task["id"])


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
    assert_clean_error(run(server, "show", "0" * 32), "no task")
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
    console = Console(out, err)
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
    console = Console(out, err)
    console.progress(1, 2, "half")
    console.progress(1, 2, "half")  # unchanged: not repeated
    console.progress(2, 2, "done")  # the end is always shown
    lines = err.getvalue().splitlines()
    assert lines == [
        "progress: [###############...............]  50% 1/2 half",
        "progress: [##############################] 100% 2/2 done",
    ]
    assert "\r" not in err.getvalue()


def test_console_shows_only_the_tasks_own_bar_once_it_draws_one():
    """tqdm in the task's log (lines rewritten with \\r): the CLI's bar is never drawn again."""
    out, err = io.StringIO(), _TTY()
    console = Console(out, err)
    console.progress(1, 4, "before")  # no bar of the task's yet: the CLI's
    assert err.getvalue().endswith("1/4 before")
    console.write("\rtrain:   0%|          | 0/4 [00:00<?, ?it/s]", "stderr")
    console.progress(1, 4, "train")
    console.write("\rtrain: 100%|##########| 4/4 [00:01<00:00]", "stderr")
    console.progress(4, 4, "train")
    console.write("\n", "stderr")
    console.progress(4, 4, "train")  # at a line start: the CLI would have drawn its bar here
    console.finish()
    text = err.getvalue()
    assert text.count("100%") == 1 and "[####" not in text.split("before", 1)[1], repr(text)

    plain_out, plain_err = io.StringIO(), io.StringIO()
    plain = Console(plain_out, plain_err)
    plain.write("\rtrain:  50%|#####     | 2/4 [00:00<00:00]", "stderr")
    plain.progress(2, 4, "train")
    plain.progress(4, 4, "train")
    assert "progress:" not in plain_err.getvalue()


def test_console_never_glues_the_other_stream_to_an_open_bar_line():
    """stdout text arriving while the task's bar line on stderr is open starts on its own line,
    and the bar stream's late newline is not printed as an empty line."""
    out = err = io.StringIO()  # one terminal for both streams
    console = Console(out, err)
    console.write("\rtrain: 100%|##########| 4/4", "stderr")
    console.write("done\n", "stdout")
    console.write("\n", "stderr")  # tqdm's close(), flushed after the stdout text
    console.line("taskrun: task x completed")
    assert out.getvalue() == "\rtrain: 100%|##########| 4/4\ndone\ntaskrun: task x completed\n"

    out = err = io.StringIO()
    console = Console(out, err)
    console.write("partial", "stdout")  # an ordinary open line is left as the task printed it
    console.write("more\n", "stderr")
    assert out.getvalue() == "partialmore\n"


def test_status_lines_in_words():
    base = {"version": "1.2", "executor": {"kind": "local", "pool": {"ready": 1, "hits": 3, "misses": 1}},
            "capacity": 4, "running": 1, "queued": 2, "max_queued": 100, "started": True, "paused": False,
            "streams": 1, "store_writable": True}  # fmt: skip
    lines = status_lines(base, "http://h/")
    assert lines[0].split(None, 1) == ["server:", "jupyter_taskrun 1.2 at http://h/"]
    assert "1 running, 2 queued (runs 4 at once, queue holds 100)" in lines[2]
    assert "1 busy kernel (local executor), 1 pre-started and ready" in lines[3]
    assert "paused" in status_lines({**base, "paused": True})[1]
    assert "NOT writable" in status_lines({**base, "store_writable": False})[-1]
    dask = status_lines({**base, "executor": {"kind": "dask", "scheduler": "tcp://s:8786", "connected": True, "workers": 3}})
    assert "on Dask workers at tcp://s:8786, connected, 3 workers" in dask[3]
    assert status_lines({**base, "new_field": 7})[-1].split() == ["new_field:", "7"]
    assert all("\x1b" not in line for line in status_lines({**base, "version": "\x1b[2J"}))


# ---------------------------------------------------------------------------
# The task resolver (pure over a client: a stand-in one here)
# ---------------------------------------------------------------------------


class _Tasks:
    """The two calls the resolver makes, over a fixed list of tasks (newest first)."""

    def __init__(self, *tasks: dict, get_error: Exception | None = None):
        self.tasks = list(tasks)
        self.get_error = get_error
        self.scans = 0

    def get(self, task_id: str) -> dict:
        if self.get_error is not None:
            raise self.get_error
        for task in self.tasks:
            if task["id"] == task_id:
                return task
        raise TaskRunHTTPError(404, "not-found", f"no task with id {task_id!r}")

    def iter_tasks(self, page_size=None):
        self.scans += 1
        yield from self.tasks


def _task(prefix: str, name: str, status: str = "completed") -> dict:
    return {"id": (prefix + "0" * 32)[:32], "name": name, "status": status}


def test_resolve_full_id_is_one_get():
    tasks = _Tasks(_task("ab12", "a"), _task("ab34", "b"))
    assert resolve_task(tasks, "ab12" + "0" * 28)["name"] == "a"
    assert resolve_task(tasks, " AB12" + "0" * 28 + " ")["name"] == "a"
    assert tasks.scans == 0


def test_resolve_unique_prefix_case_insensitive():
    tasks = _Tasks(_task("ab12", "a"), _task("ab34", "b"), _task("cd56", "c"))
    assert resolve_task(tasks, "ab3")["name"] == "b"
    assert resolve_task(tasks, "CD")["name"] == "c"


def test_resolve_ambiguous_prefix_lists_the_candidates():
    tasks = _Tasks(_task("ab12", "first", "running"), _task("ab34", "second"), _task("cd56", "other"))
    with pytest.raises(AmbiguousTaskRef) as info:
        resolve_task(tasks, "ab")
    message = str(info.value)
    assert "2 task ids" in message and "give more of the id" in message
    assert "ab120000" in message and "'first' running" in message and "ab340000" in message
    assert "other" not in message and "\n" not in message
    assert [t["name"] for t in info.value.candidates] == ["first", "second"]
    assert isinstance(info.value, TaskRefError) and isinstance(info.value, LookupError)

    many = _Tasks(*(_task(f"e{i}", f"t{i}") for i in range(8)))
    with pytest.raises(AmbiguousTaskRef, match=r"8 task ids .* and 3 more\)"):
        resolve_task(many, "e")


def test_resolve_name_newest_wins_and_id_prefix_first():
    tasks = _Tasks(_task("ab12", "train"), _task("cd34", "train"), _task("ef56", "ab"))
    assert resolve_task(tasks, "train")["id"].startswith("ab12")  # the list is newest first
    assert resolve_task(tasks, "ab")["id"].startswith("ab12")  # an id prefix before a name
    with pytest.raises(NoSuchTask):
        resolve_task(tasks, "Train")  # names are exact


def test_resolve_not_found_and_other_errors():
    tasks = _Tasks(_task("ab12", "a"))
    for ref in ("zz", "0" * 32, "no such name"):
        with pytest.raises(NoSuchTask, match="no task") as info:
            resolve_task(tasks, ref)
        assert info.value.candidates == [] and info.value.ref == ref
    with pytest.raises(NoSuchTask, match="give a task id"):
        resolve_task(tasks, "  ")
    refused = _Tasks(_task("ab12", "a"), get_error=TaskRunHTTPError(403, "forbidden", "no"))
    with pytest.raises(TaskRunHTTPError) as info:
        resolve_task(refused, "ab12" + "0" * 28)
    assert info.value.status == 403
