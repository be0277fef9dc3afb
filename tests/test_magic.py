"""``%%taskrun`` / ``%taskrun`` inside a real kernel (nbclient) against a real ``jupyter server``.

The notebook's kernel finds the server through ``JUPYTER_TASKRUN_URL`` /
``JUPYTER_TASKRUN_TOKEN`` in its environment, exactly as a user would configure it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_taskrun.client import TaskRunClient
from jupyter_taskrun.notebook.handle import TaskFailedError, decode_result
from jupyter_taskrun.notebook.magics import parse_assignments

from ._server import REPO, JupyterServer

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("magic")) as s:
        yield s


def kernel_env(server: JupyterServer) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JPY_PARENT_PID", None)
    env["JUPYTER_TASKRUN_URL"] = server.url
    env["JUPYTER_TASKRUN_TOKEN"] = server.token
    env["JUPYTER_RUNTIME_DIR"] = str(server.runtime_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_notebook(nb, server: JupyterServer, cwd: Path, timeout: int = 180) -> dict[int, dict]:
    """Execute ``nb`` in a real kernel; returns each code cell's execute_reply content by index."""
    replies: dict[int, dict] = {}

    def on_cell_executed(cell, cell_index, execute_reply):
        replies[cell_index] = execute_reply["content"]

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        store_widget_state=True,
        on_cell_executed=on_cell_executed,
    )
    client.execute(env=kernel_env(server))
    return replies


def cell(source: str, *tags: str):
    c = new_code_cell(source)
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def text_of(c) -> str:
    parts = []
    for o in c.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
    return "".join(parts)


def error_of(c):
    errs = [o for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errs, f"expected an error in {c.source!r}: {c.outputs}"
    return errs[0]


def widget_states(nb) -> dict[str, dict]:
    return nb.metadata["widgets"][WIDGET_STATE_MIME]["state"]


def test_magic_in_a_real_kernel(server, tmp_path):
    nb = new_notebook(
        cells=[
            cell("%load_ext jupyter_taskrun"),
            # 1 --wait + --as, params parsed as JSON when valid, env, tags, progress and tqdm
            cell(
                "%%taskrun --name magic-demo --wait --as h --param n=3 --param word=abc "
                "--param 'cfg={\"k\": [1, 2]}' --env GREETING=hey --tag demo magic --timeout 120\n"
                "import os\nfrom jupyter_taskrun import progress\nfrom tqdm import tqdm\n"
                "print(os.environ['GREETING'], n, word, cfg['k'])\n"
                "for i in range(3):\n    progress(i + 1, 3, 'stage')\n"
                "for _ in tqdm(range(4), desc='bar'):\n    pass\n"
                "{'n': n, 'word': word}\n"
            ),
            cell(
                "assert h.status == 'completed', h.task\n"
                "assert h.result == {'n': 3, 'word': 'abc'}, h.result\n"
                "assert h.logs().splitlines()[0] == 'hey 3 abc [1, 2]', h.logs()\n"
                "t = h.task\n"
                "assert sorted(t['tags']) == ['demo', 'magic'] and t['name'] == 'magic-demo'\n"
                "assert t['progress'] == {'value': 4, 'total': 4, 'message': 'bar'}, t['progress']\n"
                "print('HANDLE', h.id, h)"
            ),
            # 2 no --wait: returns at once, the task runs in the background
            cell("%%taskrun --name background --as bg\nimport time\ntime.sleep(1)\nprint('bg done')\n'bg-result'"),
            cell("print('NOT-YET-DONE', bg.status in ('queued', 'running'))"),
            cell("final = bg.wait(60)\nprint('BG', final['status'], bg.result, bg.logs().strip())"),
            # 3 a failing task with --wait raises TaskFailedError naming the task, with its traceback
            cell("%%taskrun --name will-fail --wait\nx = 1\nraise KeyError('missing-thing')", "raises-exception"),
            # 4 bad options: a short usage error, no traceback
            cell("%%taskrun --bogus\n1", "raises-exception"),
            cell("%%taskrun --timeout soon\n1", "raises-exception"),
            cell("%%taskrun --param novalue\n1", "raises-exception"),
            cell("%%taskrun --kernel no-such-kernel\n1", "raises-exception"),
            cell("%%taskrun\n   \n", "raises-exception"),
            cell("%taskrun frobnicate", "raises-exception"),
            # 5 %taskrun list | show | logs | cancel | panel, by id, prefix or name
            cell("%taskrun list --tag demo"),
            cell("%taskrun show magic-demo"),
            cell("%taskrun logs {h.id[:6]}"),
            cell("%%taskrun --name sleeper --quiet --as sl\nimport time\ntime.sleep(60)"),
            cell("%taskrun cancel {sl.id}"),
            cell("print('SLEEPER', sl.wait(60)['status'])"),
            cell("%taskrun panel {h.id}"),
            cell("%taskrun panel"),
            cell("%taskrun wait will-fail", "raises-exception"),
            # 6 timeouts, and the task runs in this notebook's folder (relative paths work the same)
            cell("%%taskrun --name too-slow --timeout 1 --wait --quiet\nimport time\ntime.sleep(60)", "raises-exception"),
            cell("%%taskrun --name where --wait --quiet --as where\nimport os\nopen('data.txt').read() + ' @ ' + os.getcwd()"),
            cell("print('WHERE', where.result)"),
        ]
    )
    sub = Path(server.root) / "project"
    sub.mkdir(exist_ok=True)
    (sub / "data.txt").write_text("local data")
    replies = run_notebook(nb, server, sub)
    c = nb.cells

    # 1: the panel is shown under the cell, and the widget state the browser got says completed
    widget_outputs = [o for o in c[1].outputs if WIDGET_MIME in o.get("data", {})]
    assert len(widget_outputs) == 1, c[1].outputs
    assert not [o for o in c[1].outputs if o["output_type"] == "error"], c[1].outputs
    assert "HANDLE" in text_of(c[2])
    task_id = re.search(r"HANDLE ([0-9a-f]{32})", text_of(c[2])).group(1)
    states = widget_states(nb)
    panel_id = widget_outputs[0]["data"][WIDGET_MIME]["model_id"]
    assert states[panel_id]["state"]["_dom_classes"] == ["taskrun-panel"]
    badges = [s["state"]["value"] for s in states.values() if "taskrun-badge" in s["state"].get("_dom_classes", [])]
    assert any('data-status="completed"' in b for b in badges), badges

    # 2: returned before the task finished; later completed with its result
    assert "NOT-YET-DONE True" in text_of(c[4])
    assert "BG completed bg-result bg done" in text_of(c[5])

    # 3: TaskFailedError names the task and shows the task's own traceback
    err = error_of(c[6])
    assert err["ename"] == "TaskFailedError"
    assert "will-fail" in err["evalue"] and "KeyError" in err["evalue"]
    tb = "\n".join(err["traceback"])
    assert "missing-thing" in tb and "magics.py" not in tb

    # 4: usage errors: the cell fails (Run All stops there) with a short message and no traceback
    for idx, expected in [
        (7, "unrecognized arguments: --bogus"),
        (8, "invalid float value: 'soon'"),
        (9, "--param expects KEY=VALUE"),
        (10, "no-such-kernel"),
        (11, "the cell is empty"),
        (12, "invalid choice: 'frobnicate'"),
    ]:
        reply = replies[idx]
        assert reply["status"] == "error" and reply["ename"] == "UsageError", (idx, reply)
        assert expected in reply["evalue"], (idx, reply["evalue"])
        shown = text_of(c[idx])
        assert shown.startswith("UsageError: ") and expected in shown, (idx, shown)
        assert "Traceback" not in shown and not [o for o in c[idx].outputs if o["output_type"] == "error"]
        assert len(shown.splitlines()) <= 3, shown
    assert "usage: %%taskrun" in text_of(c[7])

    # 5: management commands
    listing = c[13].outputs[0]["data"]
    assert "magic-demo" in listing["text/plain"] and "completed" in listing["text/plain"]
    assert "<table" in listing["text/html"]
    shown = text_of(c[14])
    assert task_id in shown and "status    completed" in shown and "result    {'n': 3, 'word': 'abc'}" in shown
    assert "hey 3 abc [1, 2]" in text_of(c[15])
    assert not [o for o in c[16].outputs if WIDGET_MIME in o.get("data", {})]  # --quiet: no panel
    assert "cancellation requested" in text_of(c[17])
    assert "SLEEPER cancelled" in text_of(c[18])
    assert [o for o in c[19].outputs if WIDGET_MIME in o.get("data", {})]
    list_panel = [o for o in c[20].outputs if WIDGET_MIME in o.get("data", {})]
    assert list_panel
    list_state = states[list_panel[0]["data"][WIDGET_MIME]["model_id"]]["state"]
    assert list_state["_dom_classes"] == ["taskrun-list-panel"]
    assert error_of(c[21])["ename"] == "TaskFailedError"

    # 6
    slow = error_of(c[22])
    assert slow["ename"] == "TaskFailedError" and "too-slow" in slow["evalue"] and "timed_out" in slow["evalue"]
    assert f"WHERE local data @ {os.path.realpath(sub)}" in text_of(c[24])

    # the server agrees with what the kernel saw
    client = TaskRunClient(server.url, server.token)
    assert client.get(task_id)["status"] == "completed"


def test_quickstart_notebook_runs_top_to_bottom(server, tmp_path):
    path = REPO / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    run_notebook(nb, server, server.root, timeout=240)
    errors = [
        (i, o)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o["output_type"] == "error" and "raises-exception" not in c.metadata.get("tags", [])
    ]
    assert not errors, errors
    # the failure demo really failed the way the notebook says
    failing = [c for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert failing and all(error_of(c)["ename"] == "TaskFailedError" for c in failing)
    # every %%taskrun cell without --quiet shows a panel
    for c in nb.cells:
        if c.cell_type == "code" and c.source.startswith("%%taskrun") and "--quiet" not in c.source.splitlines()[0]:
            assert any(WIDGET_MIME in o.get("data", {}) for o in c.outputs), c.source
    assert nb.metadata["widgets"][WIDGET_STATE_MIME]["state"]


def test_parse_assignments_and_results():
    assert parse_assignments(["a=1", "b=x", "c=[1, 2]", "d=", "e=a=b", 'f="1"'], "--param", json_values=True) == {
        "a": 1,
        "b": "x",
        "c": [1, 2],
        "d": "",
        "e": "a=b",
        "f": "1",
    }
    assert parse_assignments(["A=1"], "--env", json_values=False) == {"A": "1"}
    assert decode_result({"data": {"text/plain": "[1, 'a']"}}) == [1, "a"]
    assert decode_result({"data": {"text/plain": "<Foo at 0x1>"}}) == "<Foo at 0x1>"
    assert decode_result({"data": {"application/json": {"x": 1}, "text/plain": "X"}}) == {"x": 1}
    assert decode_result(None) is None
    err = TaskFailedError({"id": "ab" * 16, "name": "n", "status": "timed_out", "error": {"reason": "too slow"}})
    assert str(err) == "task 'n' (abababab) timed_out: too slow"
    assert err._render_traceback_()[0].endswith(str(err))


def test_notebook_files_are_valid():
    for path in (REPO / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is saved with outputs"
        assert json.loads(path.read_text())["nbformat"] == 4


def test_taskrun_inside_a_task_runs_the_cell_inline(server):
    """Issue 13: "Run Notebook as Task" on a notebook whose cells use ``%%taskrun``. Inside a task's
    kernel the cell runs inline, as part of the task: the parent ends only after it, no child task
    outlives it, the note is in the task's log, the last value is the cell's output, and an error
    in the cell fails the parent."""
    client = TaskRunClient(server.url, token=server.token)
    before = {t["id"] for t in client.iter_tasks()}
    nb = new_notebook(cells=[
        new_code_cell("%load_ext jupyter_taskrun"),
        new_code_cell("%%taskrun --name child\nimport time\ntime.sleep(1.5)\nprint('inner done', flush=True)\n6 * 7"),
        new_code_cell("print('after the inline cell')"),
    ])  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    task = client.submit(notebook=nb, name="parent")
    final = client.wait(task["id"], timeout=120)
    assert final["status"] == "completed", final
    logs = client.logs(task["id"])
    assert "already inside a task: this cell runs inline" in logs
    assert logs.index("inner done") < logs.index("after the inline cell")
    assert final["metrics"]["wall"] >= 1.5  # it waited for the "child": no 0.8 s "completed"
    outputs = [o for o in client.outputs(task["id"]) if o.get("output_type") in ("execute_result", "display_data")]
    assert any(o["data"].get("text/plain") == "42" for o in outputs), outputs
    assert {t["id"] for t in client.iter_tasks()} - before == {task["id"]}  # no child task

    nb.cells[1] = new_code_cell("%%taskrun\nraise ValueError('inside the inline cell')")
    failed = client.wait(client.submit(notebook=nb, name="parent-fails")["id"], timeout=120)
    assert failed["status"] == "failed" and "inside the inline cell" in (failed.get("error") or {}).get("evalue", ""), failed
