"""``jupyter taskrun values|files|notebook --html`` and ``list --values/--sort/--where`` (issue 15),
run as real subprocesses against a real ``jupyter server`` subprocess (as ``tests/test_cli.py``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import nbformat
import pytest
from nbconvert import HTMLExporter
from nbconvert.nbconvertapp import nbconvert_flags

from jupyter_taskrun.client import TaskRunClient

from ._server import taskrun_server
from .test_cli import new_tag, run, task_id_of


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real ``jupyter server`` subprocess for the module (as ``tests/test_cli.py``'s)."""
    with taskrun_server(tmp_path_factory.mktemp("taskrun-cli-results")) as srv:
        yield srv


BLOB = bytes(range(256)) * 2

WRITE = f"""
import os
from jupyter_taskrun import record
os.makedirs('cli-out/deep', exist_ok=True)
open('cli-out/deep/blob.bin', 'wb').write({BLOB!r})
open('cli-out/table.csv', 'w').write('a,b\\n1,2\\n')
for step in range(4):
    record('loss', 1.0 / (step + 1), step=step)
record('accuracy', ACC)
record('model', 'resnet')
"""


def submit(server, acc: float | None, tag: str, *extra: str) -> str:
    code = WRITE.replace("ACC", repr(acc)) if acc is not None else "print('no values')"
    proc = run(server, "submit", "-c", code, "--tag", tag, "--wait", *extra)
    assert proc.returncode == 0, proc.stderr
    return task_id_of(proc)


def test_values_command_prints_latest_and_series(server):
    tag = new_tag()
    tid = submit(server, 0.93, tag)
    proc = run(server, "values", tid)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert lines["accuracy"].strip() == "0.93"
    assert lines["model"].strip() == "resnet"
    assert lines["loss"].startswith("0.25") and "(4 points, steps 0..3)" in lines["loss"]

    as_json = json.loads(run(server, "values", tid, "--json").stdout)
    body = TaskRunClient(server.url, server.token).values(tid)  # the same as the API says
    assert as_json == body
    assert [p["step"] for p in as_json["series"]["loss"]] == [0, 1, 2, 3]

    empty = run(server, "values", submit(server, None, tag))
    assert empty.returncode == 0 and empty.stdout == "" and "no values recorded" in empty.stderr


def test_list_with_value_columns_sort_and_where(server):
    tag = new_tag()
    ids = {acc: submit(server, acc, tag) for acc in (0.5, 0.9, 0.7)}
    none = submit(server, None, tag)
    proc = run(server, "list", "--tag", tag, "--values", "accuracy,loss", "--sort", "-values.accuracy")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[-2:] == ["accuracy", "loss"]
    assert [r.split()[0] for r in rows] == [ids[0.9], ids[0.7], ids[0.5], none]
    assert rows[0].split()[-2:] == ["0.9", "0.25"]
    assert rows[-1].split()[-2:] == ["\u2014", "\u2014"]  # not recorded
    # the accuracy column starts at the same place on every line
    col = header.index("accuracy")
    assert [r[col:].split()[0] for r in rows] == ["0.9", "0.7", "0.5", "\u2014"]

    proc = run(server, "list", "--tag", tag, "--where", "values.accuracy>=0.7", "--where", "values.model=resnet", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [t["id"] for t in json.loads(proc.stdout)] == [ids[0.7], ids[0.9]]

    bad = run(server, "list", "--sort", "accuracy")
    assert bad.returncode == 1 and "'sort'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run(server, "list", "--where", "accuracy>1")
    assert bad.returncode == 1 and "'where'" in bad.stderr and "Traceback" not in bad.stderr


def test_outputs_option_files_listing_and_download(server, tmp_path):
    tag = new_tag()
    tid = submit(server, 0.9, tag, "--outputs", "cli-out/**", "--outputs", "nothing-*.txt")
    proc = run(server, "files", tid)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    blob_line = next(line for line in lines if line.endswith("cli-out/deep/blob.bin"))
    assert "512 B" in blob_line and hashlib.sha256(BLOB).hexdigest()[:12] in blob_line
    assert any(line.endswith("cli-out/table.csv") for line in lines)
    assert any("no match" in line and line.endswith("nothing-*.txt") for line in lines)

    listing = json.loads(run(server, "files", tid, "--json").stdout)
    assert {f["path"] for f in listing["files"]} == {"cli-out/deep/blob.bin", "cli-out/table.csv"}

    proc = run(server, "files", tid, "--get", "cli-out/deep/blob.bin", "-o", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    again = run(server, "files", tid, "--get", "cli-out/deep/blob.bin", "-o", str(tmp_path / "blob.bin"))
    assert again.returncode == 1 and "exists" in again.stderr
    assert run(server, "files", tid, "--get", "cli-out/deep/blob.bin", "-o", str(tmp_path / "blob.bin"), "--force").returncode == 0
    # to stdout: the bytes as they are
    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_taskrun.cli",
            "--url",
            server.url,
            "--token",
            server.token,
            "files",
            tid,
            "--get",
            "cli-out/deep/blob.bin",
            "-o",
            "-",
        ],
        env=server.env,
        capture_output=True,
        timeout=120,
    )
    assert raw.returncode == 0 and raw.stdout == BLOB
    plain = run(server, "files", submit(server, None, tag))
    assert plain.returncode == 0 and plain.stdout == "" and "asked for no output files" in plain.stderr
    missing = run(server, "files", tid, "--get", "cli-out/nope.bin", "-o", str(tmp_path / "x"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and not (tmp_path / "x").exists()


def test_outputs_outside_the_cwd_are_refused_by_the_cli(server):
    proc = run(server, "submit", "-c", "1", "--outputs", "../escape.txt")
    assert proc.returncode == 1 and "outputs[0]" in proc.stderr and "Traceback" not in proc.stderr


def test_notebook_html_and_no_input(server, tmp_path):
    tag = new_tag()
    tid = submit(server, 0.9, tag, "--name", "cli-report")
    nb = TaskRunClient(server.url, server.token).notebook(tid)
    full, _ = HTMLExporter().from_notebook_node(nbformat.from_dict(nb))
    report, _ = HTMLExporter(config=nbconvert_flags["no-input"][0]).from_notebook_node(nbformat.from_dict(nb))

    proc = run(server, "notebook", tid, "--html", "-o", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / f"cli-report-{tid[:8]}.html"
    assert proc.stdout.strip() == str(written)
    assert written.read_text(encoding="utf-8") == full

    out = tmp_path / "report.html"
    proc = run(server, "notebook", tid, "--html", "--no-input", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    assert text == report and "makedirs" not in text and "makedirs" in full

    proc = run(server, "notebook", tid, "--no-input")
    assert proc.returncode == 2 and "--no-input needs --html" in proc.stderr
    proc = run(server, "notebook", tid, "-o", str(tmp_path / "nb.ipynb"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "nb.ipynb").read_text()) == nb
