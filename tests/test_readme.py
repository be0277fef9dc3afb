"""The README's curl examples really work against a real server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def curl_examples(heading: str = "### curl examples") -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_curl_examples_run(server_factory):
    script = curl_examples()
    assert "curl" in script
    server = server_factory(taskrun={"kernel_pool_size": 0})
    env = {**os.environ, "URL": server.url.rstrip("/"), "TOKEN": server.token}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '"status": "completed"' in out and '"name": "answer"' in out
    assert "event: end" in out and "event: log" in out
    assert "0\n1\n2\n" in out  # the logs
    # the resumed stream starts after event 3
    resumed = out.split("event: end", 1)[1]
    assert "id: 4\n" in resumed and "id: 3\n" not in resumed.split("id: 4\n")[0]
    assert '"samples"' in out  # metrics


def test_readme_schedule_examples_run(server_factory):
    script = curl_examples("### Schedules with curl")
    server = server_factory(taskrun={"kernel_pool_size": 0})
    env = {**os.environ, "URL": server.url.rstrip("/"), "TOKEN": server.token}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "every day at 03:00 (Europe/Berlin)" in proc.stderr
    out = proc.stdout
    assert '"description": "every 15 minutes (UTC)"' in out
    assert out.count('"schedule_id": "') >= 2  # the run-now task, and the same task in the history
    assert '"enabled": false' in out and '"enabled": true' in out
    status, body = server.request("GET", "taskrun/api/schedules")
    assert status == 200 and b'"schedules": []' in body
