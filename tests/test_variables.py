"""``%%taskrun --in/--out`` (issue 15): notebook variables into a task kernel and back, in a real
notebook kernel (nbclient) against a real ``jupyter server`` running real task kernels.

What the task sends back is compared with what the same code gives when run directly, in the
same run. Every failure (unpicklable, missing, over the cap) must be an error naming the variable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_notebook

from jupyter_taskrun.formatting import format_bytes

from ._server import JupyterServer
from .test_magic import cell, error_of, run_notebook, text_of

#: small enough to exceed in a test, large enough for a class pickled by value
CAP = 64 * 1024

#: one task's code, run as a task and directly; its last expression is a dict holding an instance
#: of a class the task itself defines (cloudpickle sends such a class by value)
TASK_CODE = """\
import dataclasses
@dataclasses.dataclass
class Point:
    x: int
    y: int
    def norm1(self):
        return abs(self.x) + abs(self.y)
{"points": [Point(i, -i) for i in range(3)], "label": "grid", "n": 3}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with JupyterServer(tmp_path_factory.mktemp("variables"), taskrun={"max_variable_bytes": CAP}) as s:
        yield s


def test_variables_in_and_out_of_a_cell_task(server):
    nb = new_notebook(
        cells=[
            cell("%load_ext jupyter_taskrun"),
            # 1-2: --in x --out y --wait: y is assigned here when the task ends
            cell("x = 21"),
            cell("%%taskrun --in x --out y --wait --as h --quiet\nimport os\ny = x * 2\npid = os.getpid()"),
            cell("import os\nassert y == 42, y\nprint('Y', y, type(y).__name__, h.status)"),
            # 4-5: h.get and h.pull, the handle of a task that ran elsewhere (not this kernel)
            cell("del y\nprint('GET', h.get('y'), 'y' in dir())"),
            cell("print('PULL', h.pull(), y)"),
            # 6-7: without --wait: nothing assigned until pull(); then it is
            cell("%%taskrun --in x --out z w --as bg --quiet\nimport time\ntime.sleep(0.5)\nz = x + 1\nw = [x] * 3"),
            cell("print('BEFORE', 'z' in dir())\nprint('PULLED', bg.pull(), z, w)"),
            # 8-10: a function and an instance of a class defined in this notebook travel by value (cloudpickle)
            cell("class Scale:\n    def __init__(self, k):\n        self.k = k\nsq = lambda v: v * v\nscale = Scale(3)"),
            cell("%%taskrun --in sq scale --out r --wait --quiet\nr = (sq(4), scale.k, type(scale).__name__)"),
            cell("print('FN', r, r == (sq(4), scale.k, type(scale).__name__))"),
            # 11-12: h.get(): the last expression's object; compare with the same code run directly
            cell(f"%%taskrun --wait --as lastexpr --quiet\n{TASK_CODE}"),
            cell(
                "ns = {}\n"
                f"exec(compile({TASK_CODE!r}.rsplit(chr(10), 2)[0], '<direct>', 'exec'), ns)\n"
                f"direct = eval({TASK_CODE.strip().splitlines()[-1]!r}, ns)\n"
                "got = lastexpr.get()\n"
                "assert repr(got) == repr(direct), (got, direct)\n"
                "assert type(got['points'][1]).__name__ == 'Point' and got['points'][2].norm1() == direct['points'][2].norm1() == 4\n"
                "from IPython.lib.pretty import pretty\n"
                "assert lastexpr.task['result']['data']['text/plain'] == pretty(direct), lastexpr.task['result']  # h.result: the display\n"
                "print('LAST', repr(got))"
            ),
            # 13-14: --in of something that cannot be pickled: refused before submitting
            cell("import threading\nlock = threading.Lock()"),
            cell("%%taskrun --in lock --wait --quiet\nprint('never')", "raises-exception"),
            # 15: --in of a name that is not in the notebook
            cell("%%taskrun --in not_here --wait --quiet\nprint('never')", "raises-exception"),
            # 16: --out of a generator (unpicklable in the task kernel)
            cell("%%taskrun --out gen --wait --quiet --as genh\ngen = (i for i in range(3))", "raises-exception"),
            # 17: --out of a variable the task never defines
            cell("%%taskrun --out missing_var --wait --quiet --as missh\nother = 1", "raises-exception"),
            # 18: --out over c.TaskRun.max_variable_bytes
            cell(f"%%taskrun --out blob --wait --quiet --as bigh\nblob = b'y' * {4 * CAP}", "raises-exception"),
            # 19-20: --in over the cap: the server refuses the submission, naming the variable
            cell(f"big_in = b'x' * {4 * CAP}"),
            cell("%%taskrun --in big_in --wait --quiet\nprint('never')", "raises-exception"),
            # 21: the same errors through the handle, and the index the server keeps
            cell(
                "for handle, name in ((genh, 'gen'), (missh, 'missing_var'), (bigh, 'blob')):\n"
                "    try:\n"
                "        handle.get(name)\n"
                "    except Exception as e:\n"
                "        print('ERR', name, type(e).__name__, '|', e)\n"
                "    print('STATUS', name, handle.status, [(v['name'], bool(v['error'])) for v in handle.variables()['variables']])"
            ),
            # 22-24: --outputs GLOB (repeatable) and --inputs PATH (repeatable) become the submission's fields
            cell(
                "%%taskrun --outputs 'made/*.txt' --outputs 'made/*.csv' --inputs data.txt --inputs extra --wait --quiet --as fh\n"
                "import os\nos.makedirs('made', exist_ok=True)\n"
                "open('made/a.txt', 'w').write(open('data.txt').read().upper())\nopen('made/b.csv', 'w').write('k,v')"
            ),
            cell(
                "manifest = fh.client.files(fh.id)\n"
                "print('OUTPUTS', manifest['outputs'], sorted(f['path'] for f in manifest['files']))\n"
                "print('BYTES', fh.client.download_file(fh.id, 'made/a.txt'))"
            ),
            cell("%%taskrun --inputs no_such_file.txt --quiet\nprint('never')", "raises-exception"),
        ]
    )
    (Path(server.root) / "data.txt").write_text("input text")
    (Path(server.root) / "extra").mkdir(exist_ok=True)
    run_notebook(nb, server, Path(server.root), timeout=240)
    c = nb.cells

    assert not [o for o in c[2].outputs if o["output_type"] == "error"], c[2].outputs
    assert "Y 42 int completed" in text_of(c[3]), c[3].outputs
    assert "GET 42 False" in text_of(c[4]), c[4].outputs
    assert "PULL ['y'] 42" in text_of(c[5]), c[5].outputs
    assert "BEFORE False" in text_of(c[7]), c[7].outputs
    assert "PULLED ['z', 'w'] 22 [21, 21, 21]" in text_of(c[7]), c[7].outputs
    assert "FN (16, 3, 'Scale') True" in text_of(c[10]), c[10].outputs
    assert "LAST {'points': [Point(x=0, y=0), Point(x=1, y=-1), Point(x=2, y=-2)]" in text_of(c[12]), c[12].outputs

    def error(i: int) -> tuple[str, str]:
        err = error_of(c[i])
        return err["ename"], err["evalue"]

    ename, evalue = error(14)
    assert ename == "VariableError" and "--in lock" in evalue and "cannot pickle 'lock'" in evalue, evalue
    ename, evalue = error(15)
    assert ename == "VariableError" and "not_here" in evalue and "no variable" in evalue, evalue
    ename, evalue = error(16)
    assert ename == "VariableError" and "cannot pickle 'gen'" in evalue and "generator" in evalue, evalue
    ename, evalue = error(17)
    assert ename == "VariableError" and "'missing_var' is not defined when the task ends" in evalue, evalue
    ename, evalue = error(18)
    assert ename == "VariableError" and "'blob'" in evalue and "max_variable_bytes" in evalue and f"cap of {format_bytes(CAP)}" in evalue, (
        evalue
    )
    ename, evalue = error(20)
    assert ename == "VariableError" and "variables_in.big_in" in evalue and "max_variable_bytes" in evalue, evalue

    shown = text_of(c[21])
    for name, words in (("gen", "cannot pickle"), ("missing_var", "not defined"), ("blob", "max_variable_bytes")):
        line = next(x for x in shown.splitlines() if x.startswith(f"ERR {name} "))
        assert "VariableError" in line and words in line, line
        # a variable's failure is its own: the task itself completed
        assert f"STATUS {name} completed [('{name}', True), ('@result', False)]" in shown, shown

    assert "OUTPUTS ['made/*.txt', 'made/*.csv'] ['made/a.txt', 'made/b.csv']" in text_of(c[23]), c[23].outputs
    assert "BYTES b'INPUT TEXT'" in text_of(c[23]), c[23].outputs
    shown = text_of(c[24])
    assert shown.startswith("UsageError: the server refused: 'inputs[0]'") and "no_such_file.txt" in shown, shown
