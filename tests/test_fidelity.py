"""What comes back is exactly what ran (issue 11): outputs as stock nbclient gives them, notebooks
Jupyter opens are run, script exit semantics as ``python script.py``, parameters in the kernel's
language. Every comparison runs the reference tool (nbclient, papermill) in the same test.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_taskrun.errors import InvalidSubmission
from jupyter_taskrun.execution.submission import build_notebook, normalize_notebook, parameters_source
from jupyter_taskrun.models import TaskSubmission

CLEAR_CELLS = [
    # print, clear(wait), print → nbclient keeps only 'world'
    "from IPython.display import clear_output, display, HTML\nprint('Hello')\nclear_output(wait=True)\nprint('world')",
    # display, clear(wait), print → the print replaces the display
    "display(HTML('<b>kept?</b>'))\nclear_output(wait=True)\nprint('after')",
    # clear at once
    "print('gone')\nclear_output()\nprint('stays')",
    # clear(wait) at the end of a cell: nothing follows, so nothing is cleared
    "print('last words')\nclear_output(wait=True)",
    # display ids and updates, across cells
    "h = display(HTML('<i>v1</i>'), display_id='d1')\nprint('between')",
    "h.update(HTML('<i>v2</i>'))\nfrom IPython.display import update_display\nupdate_display(HTML('<i>v3</i>'), display_id='d1')",
    # stream coalescing, both streams, an execute_result
    "import sys\nfor i in range(5):\n    print(i)\n    sys.stderr.write(f'e{i}\\n')\n40 + 2",
    # an error ends the notebook like nbclient's default (allow_errors=False)
]
ERROR_CELL = "raise ValueError('boom')"


def _normal(outputs: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """A cell's outputs as a comparison may rely on: the rich outputs in order, and each stream's
    whole text. How stdout and stderr interleave, and how a stream splits into messages,
    depend on flush timing in the kernel (nbclient's own runs differ there), not on the tool."""
    rich = [{k: v for k, v in o.items() if k != "transient"} for o in outputs if o.get("output_type") != "stream"]
    streams: dict[str, str] = {}
    for o in outputs:
        if o.get("output_type") == "stream":
            streams[o["name"]] = streams.get(o["name"], "") + o["text"]
    return rich, streams


async def _stock_nbclient(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    client = NotebookClient(nb, kernel_name="python3", timeout=60, allow_errors=False)
    try:
        await client.async_execute()
    except Exception as e:  # the error cell: nbclient stops there, as taskrun does
        assert "boom" in str(e)
    return nb


async def test_outputs_identical_to_nbclient(api):
    nb = new_notebook(cells=[new_code_cell(src) for src in [*CLEAR_CELLS, ERROR_CELL, "print('never runs')"]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    stock = await _stock_nbclient(nb)
    task = await api.run(notebook=json.loads(nbformat.writes(nb)))
    assert task["status"] == "failed" and task["error"]["ename"] == "ValueError"
    code, ours, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert code == 200
    assert len(ours["cells"]) == len(stock.cells)
    for i, (a, b) in enumerate(zip(ours["cells"], stock.cells)):
        assert _normal(a.get("outputs", [])) == _normal(b.get("outputs", [])), f"cell {i}: {b.source!r}"
        assert a.get("execution_count") == b.get("execution_count"), f"cell {i} execution_count"
    # the spot checks the issue names, so a regression reads plainly
    assert ours["cells"][0]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "world\n"}]
    assert [o["output_type"] for o in ours["cells"][1]["outputs"]] == ["stream"]


async def test_clear_output_is_an_event_and_outputs_route_honours_it(api):
    code = (
        "from IPython.display import clear_output, display, HTML\n"
        "for i in range(200):\n"
        "    clear_output(wait=True)\n"
        "    display(HTML(f'<b>frame {i}</b>'))\n"
    )
    task = await api.run(code=code)
    assert task["status"] == "completed", task
    # the artifact: one figure
    _, nb, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert [o["data"]["text/html"] for o in nb["cells"][0]["outputs"]] == ["<b>frame 199</b>"]
    # GET …/outputs: what is visible now
    _, outs, _ = await api.call("GET", f"tasks/{task['id']}/outputs")
    assert [o["data"]["text/html"] for o in outs["outputs"]] == ["<b>frame 199</b>"]
    # the stream: 199 clears, each before the next frame
    events = await api.events(task["id"])
    clears = [e for e in events if e["type"] == "clear"]
    assert len(clears) == 200 and all(e["data"] == {"cell_index": 0} for e in clears)
    # stored outputs stay bounded by what is visible: superseded frames are gone from the store
    assert len([e for e in events if e["type"] == "output"]) == 1


async def test_update_display_keeps_one_stored_update(api):
    code = "h = display('v0', display_id=True)\nfor i in range(50):\n    h.update(f'v{i + 1}')\n"
    task = await api.run(code=code)
    _, outs, _ = await api.call("GET", f"tasks/{task['id']}/outputs")
    assert [o["data"]["text/plain"] for o in outs["outputs"]] == ["'v50'"]
    events = await api.events(task["id"])
    assert len([e for e in events if e["type"] == "output"]) == 2  # the display and its latest update


async def test_notebook_with_incomplete_kernelspec_runs(api, jp_root_dir):
    nb = {
        "nbformat": 4,
        "nbformat_minor": 4,
        "metadata": {"kernelspec": {"language": "python"}},  # no name: JupyterLab opens it
        "cells": [
            {"cell_type": "code", "metadata": {"tags": 5}, "source": ["x = 6\n", "x * 7"], "outputs": [{"stale": 1}], "execution_count": 9},
            {"cell_type": "markdown", "metadata": {}, "source": "note"},
        ],
    }
    nbformat.reads(json.dumps(nb), as_version=4)  # what Jupyter itself accepts
    task = await api.run(notebook=nb)
    assert task["status"] == "completed", task
    assert task["result"]["data"]["text/plain"] == "42"
    (jp_root_dir / "partial.ipynb").write_text(json.dumps({**nb, "metadata": {"kernelspec": "python3"}}))
    task = await api.run(path="partial.ipynb", parameters={"x": 1})
    assert task["status"] == "completed", task
    # no cell tagged 'parameters' (its tags were not a list): injected first, as papermill does
    assert task["result"]["data"]["text/plain"] == "42"
    _, ran, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert ran["cells"][0]["metadata"]["tags"] == ["injected-parameters"]
    assert [o["output_type"] for o in ran["cells"][1]["outputs"]] == ["execute_result"]  # stale output dropped


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"nbformat": 4, "metadata": {}}, "no list of 'cells'"),
        ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {"a": 1}}, "no list of 'cells'"),
    ],
)
async def test_unrunnable_notebooks_are_refused_with_the_reason(api, bad, reason):
    code, body, _ = await api.call("POST", "tasks", {"notebook": bad})
    assert code == 400 and reason in body["message"], body
    _, listing, _ = await api.call("GET", "tasks")
    assert listing["tasks"] == []


def test_normalize_matches_nbformat_read(tmp_path):
    """Unit: every notebook nbformat.read accepts comes out valid v4 with our kernel."""
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {},
        "worksheets": [{"cells": [{"cell_type": "code", "input": "1+1", "outputs": [], "language": "python"}]}],
    }
    nbformat.reads(json.dumps(v3), as_version=4)
    nb = normalize_notebook(v3, "python3")
    assert nb.nbformat == 4 and nb.cells[0].source == "1+1"
    assert nb.metadata.kernelspec["name"] == "python3"
    nbformat.validate(nb)
    with pytest.raises(InvalidSubmission, match="not JSON"):
        normalize_notebook(b"{nope", "python3")


# ---------------------------------------------------------------- exit semantics


@pytest.mark.parametrize(
    "body, status, exit_code",
    [
        ("import sys\nprint('a')\nsys.exit(0)\nprint('b')", "completed", 0),
        ("import sys\nsys.exit()", "completed", 0),
        ("raise SystemExit", "completed", 0),
        ("import sys\nsys.exit(3)", "failed", 3),
        ("import sys\nsys.exit('bye')", "failed", 1),
        ("raise ValueError('x')", "failed", 1),
        ("print('fine')", "completed", 0),
    ],
)
async def test_script_exit_codes_match_python(api, jp_root_dir, tmp_path, body, status, exit_code):
    import subprocess

    script = jp_root_dir / "s.py"
    script.write_text(body + "\n")
    real = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert real.returncode == exit_code  # the reference: python itself, same run
    task = await api.run(path="s.py")
    assert (task["status"], task["exit_code"]) == (status, exit_code), task
    if "print('b')" in body:
        code, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
        assert logs == "a\n"  # nothing after sys.exit runs


async def test_notebook_system_exit_follows_papermill(api, jp_root_dir):
    import papermill

    cells = ["print('one')", "import sys\nsys.exit(0)", "print('never')"]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jp_root_dir / "exit.ipynb")
    out = papermill.execute_notebook(
        str(jp_root_dir / "exit.ipynb"), str(jp_root_dir / "pm.ipynb"), kernel_name="python3", progress_bar=False
    )
    pm_ran = [bool(c.get("outputs")) or c.get("execution_count") is not None for c in out.cells]  # papermill: no exception
    task = await api.run(path="exit.ipynb")
    assert task["status"] == "completed" and task["exit_code"] == 0, task
    _, ours, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    ran = [c.get("execution_count") is not None for c in ours["cells"]]
    assert ran == pm_ran == [True, True, False]
    # a cell task without SystemExit has no exit code
    task = await api.run(code="1")
    assert task["exit_code"] is None


async def test_script_args_become_sys_argv(api, jp_root_dir):
    (jp_root_dir / "argv.py").write_text("import sys\nprint(sys.argv[1:])\n")
    task = await api.run(path="argv.py", args=["--lr", "0.1", "two words"])
    assert task["status"] == "completed", task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "['--lr', '0.1', 'two words']\n"
    task = await api.run(code="import sys\nprint(sys.argv)", args=["a"])  # python -c CODE a
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "['-c', 'a']\n"
    code, body, _ = await api.call("POST", "tasks", {"cells": ["1"], "args": ["x"]})
    assert code == 400 and "args" in body["message"]


# ---------------------------------------------------------------- parameters in other languages


PARAMS = {"alpha": 0.5, "n": 3, "name": 'a "quoted" \u00e9 name', "flag": True, "none": None, "items": [1, "two"], "_hidden": 1}


@pytest.mark.parametrize("language", ["python", "R", "julia", "bash"])
def test_parameters_written_as_papermill_writes_them(language):
    from papermill.translators import papermill_translators

    params = dict(PARAMS)
    translator = papermill_translators.find_translator("", language)
    assert parameters_source(params, language) == translator.codify(params)


def test_parameters_never_python_in_another_language(tmp_path):
    sub = TaskSubmission.from_dict({"code": "x", "parameters": {"x": 1}})
    with pytest.raises(InvalidSubmission, match="cannot be passed to a 'fortran' kernel"):
        build_notebook(sub, str(tmp_path), "fortran-kernel", "fortran")
    nb, _ = build_notebook(sub, str(tmp_path), "ir", "R")
    assert nb.cells[0].source == "# Parameters\nx = 1\n" and nb.metadata.kernelspec["language"] == "R"


@pytest.fixture
def fortran_kernel(jp_environ, jp_data_dir):
    """A kernel spec of a language papermill cannot translate (its argv is never run)."""
    spec_dir = jp_data_dir / "kernels" / "fortran"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": ["false", "{connection_file}"], "display_name": "Fortran", "language": "fortran"})
    )
    return "fortran"


async def test_parameters_for_untranslatable_language_refused(api, fortran_kernel):
    code, body, _ = await api.call("POST", "tasks", {"code": "x", "kernel_name": fortran_kernel, "parameters": {"x": 1}})
    assert code == 400 and "fortran" in body["message"], body
    _, listing, _ = await api.call("GET", "tasks")
    assert listing["tasks"] == []


def test_environment_has_no_tee_fd_leak():
    assert "JUPYTER_TASKRUN_TEE_FD" not in os.environ
