"""The real ``jupyter taskrun`` command on a real terminal (a pty) against a real server (issue 13).

Each test runs the installed command with its stdin, stdout and stderr on the slave side of a
pseudo-terminal, reads the master side until the command exits (with a deadline), and checks
what a person would see: ``screen()`` replays the bytes the way a terminal does (carriage
returns, newlines, erase-line), so a bar redrawn in place counts as one line.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time

import pytest

from jupyter_taskrun.client import TaskRunClient

try:
    from ._server import taskrun_server
except ImportError:  # tests/ is not a package
    from _server import taskrun_server

#: CSI escape sequences (cursor, erase, colours)
_CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _jupyter() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "jupyter")
    found = beside if os.access(beside, os.X_OK) else shutil.which("jupyter")
    if not found or not shutil.which("jupyter-taskrun", path=os.path.dirname(found) + os.pathsep + os.environ.get("PATH", "")):
        pytest.skip("the jupyter taskrun console script is not installed")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with taskrun_server(tmp_path_factory.mktemp("taskrun-cli-pty")) as srv:
        yield srv


@pytest.fixture
def client(server) -> TaskRunClient:
    return TaskRunClient(server.url, server.token)


def run_on_tty(server, *args: str, timeout: float = 120, columns: int = 120) -> tuple[int, str]:
    """Run ``jupyter taskrun ARGS`` on a fresh pty; its exit code and everything it wrote."""
    jupyter = _jupyter()
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**server.env, "PATH": os.path.dirname(jupyter) + os.pathsep + server.env.get("PATH", ""), "TERM": "xterm"}
    env.pop("COLUMNS", None)
    cmd = [jupyter, "taskrun", "--url", server.url, "--token", server.token, *args]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=server.root, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                pytest.fail(f"{' '.join(args)} did not finish in {timeout} s; so far: {b''.join(chunks)!r}")
            ready, _, _ = select.select([master], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw`` (``\\r`` back to column 0, ``\\x1b[K`` erases)."""
    lines, col = [""], 0
    i = 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            if m.group().endswith("K"):
                lines[-1] = lines[-1][:col]
            i = m.end()
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1].ljust(col)
            lines[-1] = line[:col] + ch + line[col + 1 :]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def test_screen_replays_a_terminal():
    assert screen("a\r\nb 10%\rb 100%\r\n\x1b[K[#] 50%\r\x1b[Kend\r\n") == ["a", "b 100%", "end", ""]


def test_logs_and_show_by_prefix_and_name(server, client):
    task = client.submit("print('hello from the task')", name="pty-named")
    client.wait(task["id"], timeout=120)
    prefix = task["id"][:8]

    code, out = run_on_tty(server, "logs", prefix)
    assert code == 0, out
    assert screen(out)[:1] == ["hello from the task"], out
    assert "404" not in out and "no such endpoint" not in out

    code, out = run_on_tty(server, "show", "pty-named")
    assert code == 0, out
    assert f"id:        {task['id']}" in screen(out), out

    code, out = run_on_tty(server, "logs", "zzzz-no-such-task")
    assert code == 1
    assert screen(out)[0].startswith("jupyter taskrun: error: no task 'zzzz-no-such-task'"), out


def test_status_is_readable_text(server):
    code, out = run_on_tty(server, "status")
    assert code == 0, out
    lines = [line for line in screen(out) if line]
    keys = [line.split(":", 1)[0] for line in lines]
    assert keys[:4] == ["server", "runner", "tasks", "kernels"], lines
    assert re.search(r"^tasks:\s+\d+ running, \d+ queued", lines[2]), lines
    assert "running tasks" in lines[1] or "paused" in lines[1]
    assert "{" not in out and "'" not in out  # not a dict's repr

    code, out = run_on_tty(server, "status", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert {"running", "queued", "paused", "capacity", "version"} <= set(status)


TQDM_SCRIPT = """\
import time
from tqdm import tqdm

for step in tqdm(range(20), desc="train"):
    time.sleep(0.05)
print("done")
"""


def test_follow_shows_the_tasks_tqdm_bar_once(server):
    """``submit --follow`` of a tqdm loop: one bar (the task's), one 100% line, nothing interleaved."""
    pytest.importorskip("tqdm")
    script = server.root / "train_tqdm.py"
    script.write_text(TQDM_SCRIPT)
    code, out = run_on_tty(server, "submit", str(script), "--follow")
    assert code == 0, out
    lines = screen(out)
    bars = [line for line in lines if "%|" in line]
    assert bars and all(line.startswith("train:") for line in bars), lines  # nothing drawn into its line
    assert len([line for line in lines if "100%" in line]) == 1, lines
    assert "[#" not in out and "] 100%" not in out, out  # the CLI drew no bar of its own
    assert "done" in lines, lines  # the task's stdout on a line of its own
    shown = [line for line in lines if line]
    assert shown[-1].startswith("taskrun: task ") and "completed" in shown[-1], lines
    assert shown.index(bars[-1]) < shown.index("done") < len(shown) - 1


def test_follow_without_tqdm_still_draws_the_clis_bar(server):
    code = "import time\nfrom jupyter_taskrun import progress\nfor i in range(1, 4):\n    progress(i, 3, 'step')\n    time.sleep(0.3)\n"
    status, out = run_on_tty(server, "submit", "-c", code, "--follow")
    assert status == 0, out
    assert "\r\x1b[K[##############################] 100% 3/3 step" in out
    lines = [line for line in screen(out) if line]
    assert "100%" not in " ".join(lines)  # cleared before the final line
    assert lines[-1].startswith("taskrun: task ") and "completed" in lines[-1]
