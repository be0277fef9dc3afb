"""The README's "Results with curl" block really works against a real server (as ``tests/test_readme.py``)."""

from __future__ import annotations

import json
import os
import subprocess

import nbformat
from nbconvert import HTMLExporter
from nbconvert.nbconvertapp import nbconvert_flags

from .test_readme import curl_examples


def json_documents(text: str) -> list:
    """The JSON answers curl printed one after the other (no newline between them)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(text, at)
        out.append(doc)
    return out


def test_readme_results_examples_run(server_factory, tmp_path):
    script = curl_examples("### Results with curl")
    assert "values" in script and "files/scores.csv" in script
    server = server_factory(taskrun={"kernel_pool_size": 0})
    env = {**os.environ, "URL": server.url.rstrip("/"), "TOKEN": server.token}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    values, listing, files = json_documents(proc.stdout)
    assert values["values"] == {"accuracy": 0.93, "loss": 0.25}
    assert [p["step"] for p in values["series"]["loss"]] == [1, 2]
    assert [t["id"] for t in listing["tasks"]] == [values["task_id"]]
    assert [f["path"] for f in files["files"]] == ["scores.csv"]
    assert (tmp_path / "scores.csv").read_text() == "step,loss\n1,0.5\n2,0.25\n"
    status, body = server.request("GET", f"taskrun/api/tasks/{values['task_id']}/notebook")
    assert status == 200
    report, _ = HTMLExporter(config=nbconvert_flags["no-input"][0]).from_notebook_node(nbformat.from_dict(json.loads(body)))
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == report
