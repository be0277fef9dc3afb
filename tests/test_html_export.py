"""HTML export of an executed notebook (issue 15, part 4): ``GET …/notebook?format=html`` and
``&no_input=1`` (report mode), compared in the same run with nbconvert's own ``HTMLExporter``
on the same executed notebook (the one ``GET …/notebook`` returns). Real server, real kernel."""

from __future__ import annotations

import html
import re

import nbformat
import pytest
from nbconvert import HTMLExporter
from nbconvert.nbconvertapp import nbconvert_flags

from .helpers import assert_json_error

NOTEBOOK = nbformat.v4.new_notebook(
    cells=[
        nbformat.v4.new_markdown_cell("# Report title\n\nSome *prose* here."),
        nbformat.v4.new_code_cell("SOURCE_MARKER_ONE = 6 * 7\nprint('printed-output', SOURCE_MARKER_ONE)"),
        nbformat.v4.new_code_cell("from IPython.display import HTML\nHTML('<b id=\"rich-output\">bold result</b>')"),
        nbformat.v4.new_code_cell("SOURCE_MARKER_TWO = 'x'\nSOURCE_MARKER_TWO * 3"),
    ],
    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
)


def text_of(page: str) -> str:
    """The page's text, roughly: tags dropped, entities decoded (code is highlighted in spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


async def executed(api) -> tuple[dict, dict]:
    task = await api.run(notebook=NOTEBOOK, name="report.ipynb")
    assert task["status"] == "completed", task["error"]
    code, nb, _ = await api.call("GET", f"tasks/{task['id']}/notebook")
    assert code == 200
    return task, nb


async def test_html_is_what_nbconvert_makes_of_the_executed_notebook(api):
    task, nb = await executed(api)
    code, page, headers = await api.call("GET", f"tasks/{task['id']}/notebook", params={"format": "html"})
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    disposition = headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="report-{task["id"][:8]}.html"'), disposition
    assert "sandbox" in headers["Content-Security-Policy"]

    ours, _ = HTMLExporter().from_notebook_node(nbformat.from_dict(nb))
    assert page == ours  # the same nbconvert, the same notebook, the same page
    words = text_of(page)
    for needle in ("Report title", "SOURCE_MARKER_ONE = 6 * 7", "SOURCE_MARKER_TWO", "printed-output 42", "'xxx'"):
        assert needle in words, needle
    assert '<b id="rich-output">bold result</b>' in page
    assert "In\xa0[1]:" in words or "[1]:" in words  # prompts shown


async def test_no_input_is_nbconverts_no_input_report(api):
    task, nb = await executed(api)
    code, page, _ = await api.call("GET", f"tasks/{task['id']}/notebook", params={"format": "html", "no_input": "1"})
    assert code == 200
    # what `jupyter nbconvert --to html --no-input` configures
    exporter = HTMLExporter(config=nbconvert_flags["no-input"][0])
    assert exporter.exclude_input is True
    ours, _ = exporter.from_notebook_node(nbformat.from_dict(nb))
    assert page == ours
    plain_exclude, _ = HTMLExporter(exclude_input=True).from_notebook_node(nbformat.from_dict(nb))
    words, plain_words = text_of(page), text_of(plain_exclude)
    for needle in ("SOURCE_MARKER_ONE = 6 * 7", "SOURCE_MARKER_TWO =", "print("):
        assert needle not in words and needle not in plain_words, needle
    for needle in ("Report title", "printed-output 42", "'xxx'"):  # markdown and every output stay
        assert needle in words and needle in plain_words, needle
    assert '<b id="rich-output">bold result</b>' in page
    assert "[1]:" not in words  # report mode: no prompts either
    # and `no_input=0` is the full page again
    code, full, _ = await api.call("GET", f"tasks/{task['id']}/notebook", params={"format": "html", "no_input": "0"})
    assert code == 200 and "SOURCE_MARKER_ONE = 6 * 7" in text_of(full)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"format": "pdf"}, "format"),
        ({"format": "HTML"}, "format"),
        ({"format": "html", "no_input": "yes"}, "no_input"),
    ],
)
async def test_a_bad_format_is_400_naming_it(api, params, field):
    task = await api.run(code="1")
    code, body, _ = await api.call("GET", f"tasks/{task['id']}/notebook", params=params)
    assert_json_error(code, body, 400, "invalid")
    assert f"'{field}'" in body["message"], body


async def test_html_of_a_task_not_yet_run_is_409_and_of_another_is_404(api, taskrun):
    taskrun.pause()
    try:
        task = await api.submit(code="1")
        code, body, _ = await api.call("GET", f"tasks/{task['id']}/notebook", params={"format": "html"})
        assert_json_error(code, body, 409, "conflict")
    finally:
        taskrun.resume()
    code, body, _ = await api.call("GET", f"tasks/{'0' * 32}/notebook", params={"format": "html"})
    assert_json_error(code, body, 404, "not-found")
