"""The README's "Workflows with curl" block really works against a real server (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess

from .test_readme import curl_examples


def test_readme_workflow_examples_run(server_factory):
    script = curl_examples("### Workflows with curl")
    server = server_factory(taskrun={"kernel_pool_size": 0})
    env = {**os.environ, "URL": server.url.rstrip("/"), "TOKEN": server.token}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "waiting"  # train waited for prep
    out = proc.stdout
    assert "rows: 41\n" in out
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while i < len(out):
        if out[i] in "{[":
            doc, i = decoder.raw_decode(out, i)
            docs.append(doc)
        else:
            i += 1
    train, attempts, graph = docs[0], docs[1], docs[2]
    assert train["status"] == "completed" and train["parameters"] == {"rows": 41} and train["result"]["data"]["text/plain"] == "42"
    assert [t["id"] for t in attempts["attempts"]] == [train["id"]]
    assert [t["id"] for t in graph["dependents"]] == [train["id"]]
