"""What tasks give back, in JupyterLab (issue 15), end to end in real headless Chromium.

Real tasks record values (``record()``, a series with steps) and write output files
(``outputs`` in the submission); the real Lab page then shows them:

* the detail view: a card per value (the latest one) with a chart for the series, growing
  live from ``value`` events while the task runs; the Files section with the kept files
  (a download byte-identical to the file the task wrote), the refused one with the server's
  reason and the pattern that matched nothing; "Download HTML" / "HTML without code" equal
  to what ``GET …/notebook?format=html`` answers;
* the sidebar: a recorded value chosen as a column, sorted through the server's
  ``?sort=values.NAME``, the choice remembered over a reload;
* the Compare view, opened from a task's tag and from the sidebar's context menu: tasks
  sharing a tag side by side with their parameters and values, sorted by a header click.

Expected values come from the REST API and the files on disk in the same run. Screenshots:
tests/artifacts/results-*.png.
"""

from __future__ import annotations

import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jupyter_taskrun.formatting import format_bytes
from tests.browser.labui import PANEL, open_panel, row, unique, wait_until

pytestmark = pytest.mark.browser

DETAIL = "#jupyter-taskrun-detail-{id}"


def raw_get(lab_server: Any, path: str) -> bytes:
    req = urllib.request.Request(lab_server.url + path)
    req.add_header("Authorization", f"token {lab_server.token}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def open_detail(page: Any, task_id: str) -> Any:
    open_panel(page)
    row(page, task_id).wait_for(state="visible", timeout=20000)
    row(page, task_id).click()
    detail = page.locator(DETAIL.format(id=task_id))
    detail.wait_for(state="visible", timeout=20000)
    return detail


def card_texts(page: Any, task_id: str) -> dict[str, str]:
    return page.evaluate(
        """(sel) => Object.fromEntries([...document.querySelectorAll(sel + ' .jp-TaskRun-valueCard')]
            .map(c => [c.dataset.name, c.querySelector('.jp-TaskRun-valueLatest').textContent]))""",
        DETAIL.format(id=task_id),
    )


def shown_number(text: str) -> float:
    return float(text.replace("\u2212", "-"))


# ------------------------------------------------------------------ detail view


def test_detail_shows_values_live_files_and_html(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    uid = unique("res")
    folder = f"out-{uid}"
    payload = os.urandom(3000) + bytes(range(256))  # binary: a download must keep every byte
    outside = lab_server.base / f"secret-{uid}.txt"  # beside the server root, not under it
    outside.write_text("outside\n")
    code = f"""
import os, time
from jupyter_taskrun import record
os.makedirs({folder!r}, exist_ok=True)
with open({folder!r} + '/metrics.csv', 'w') as f:
    f.write('step,loss\\n' + ''.join(f'{{i}},{{1/(i+1):.4f}}\\n' for i in range(6)))
with open({folder!r} + '/blob.bin', 'wb') as f:
    f.write(bytes.fromhex({payload.hex()!r}))
os.symlink({str(outside)!r}, {folder!r} + '/escape.txt')
marker_{uid[-6:]} = 1  # shows whether the exported HTML has the code
record('accuracy', 0.93)
record('model', 'resnet')
for step in range(8):
    record('loss', round(1 / (step + 1), 4), step=step)
    time.sleep(0.8)
print('trained')
"""
    task = api.submit(code=code, name=f"train-{uid}", tags=[uid], outputs=[f"{folder}/*", f"nothing-{uid}/*.txt"])
    open_detail(page, task["id"])
    sel = DETAIL.format(id=task["id"])

    # live: the series card grows while the task runs (value events, not a reload at the end)
    loss_meta = page.locator(f'{sel} .jp-TaskRun-valueCard[data-name="loss"] .jp-TaskRun-valueMeta')
    loss_meta.wait_for(timeout=30000)
    counts = []

    def grew() -> bool:
        text = loss_meta.text_content() or ""
        n = int(text.split()[0]) if text[:1].isdigit() else 0
        counts.append(n)
        return len(set(counts)) >= 2 and api.task(task["id"])["status"] == "running"

    wait_until(grew, 20, "the loss card gains points while the task runs", every=0.2)
    page.locator(f"{sel} .jp-TaskRun-valuesSection").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "results-01-values-live.png"))

    done = api.wait_status(task["id"], {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done.get("error")
    values = api.get(f"taskrun/api/tasks/{task['id']}/values")
    assert values["values"] == {"accuracy": 0.93, "model": "resnet", "loss": round(1 / 8, 4)}
    assert [p["step"] for p in values["series"]["loss"]] == list(range(8))

    # the cards: one per name, the latest value, a chart for the series with all its points
    wait_until(lambda: len(card_texts(page, task["id"])) == 3, 15, "three value cards")
    wait_until(
        lambda: loss_meta.text_content() == f"{len(values['series']['loss'])} points · step 7",
        15,
        "the whole loss series",
    )
    cards = card_texts(page, task["id"])
    assert shown_number(cards["accuracy"]) == values["values"]["accuracy"]
    assert cards["model"] == "resnet"
    assert shown_number(cards["loss"]) == pytest.approx(values["values"]["loss"], rel=1e-5)
    chart = page.locator(f'{sel} .jp-TaskRun-valueCard[data-name="loss"] svg.jp-TaskRun-valueChart polyline')
    assert len(chart.get_attribute("points").split()) == 8
    assert page.locator(f'{sel} .jp-TaskRun-valueCard[data-name="accuracy"] svg').count() == 0

    # the files: kept (path, size), refused (reason), missing (pattern), as the server lists them
    listing = api.get(f"taskrun/api/tasks/{task['id']}/files")
    kept = {f["path"]: f for f in listing["files"]}
    assert set(kept) == {f"{folder}/metrics.csv", f"{folder}/blob.bin"}
    files = page.locator(f"{sel} .jp-TaskRun-filesSection")
    files.locator(".jp-TaskRun-fileRow").first.wait_for(timeout=15000)
    shown = page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' .jp-TaskRun-fileRow')].map(r => [r.dataset.path,
            r.querySelector('.jp-TaskRun-fileSize').textContent])""",
        sel,
    )
    assert sorted(shown) == sorted([p, format_bytes(f["size"])] for p, f in kept.items())
    refused = files.locator(f'.jp-TaskRun-fileRefusedItem[data-path="{folder}/escape.txt"]')
    assert [r["reason"] for r in listing["refused"]] == ["a symlink out of the task's working folder"]
    assert listing["refused"][0]["reason"] in refused.text_content()
    assert f"nothing-{uid}/*.txt" in files.locator(".jp-TaskRun-fileMissing").text_content()

    # Download: the bytes the task wrote, unchanged
    on_disk = (lab_server.root / folder / "blob.bin").read_bytes()
    assert on_disk == payload
    with page.expect_download(timeout=20000) as info:
        files.locator(f'.jp-TaskRun-fileRow[data-path="{folder}/blob.bin"] button.jp-mod-download').click()
    download = info.value
    assert download.suggested_filename == "blob.bin"
    assert Path(download.path()).read_bytes() == on_disk

    # Open: a text file shown inline, as text
    files.locator(f'.jp-TaskRun-fileRow[data-path="{folder}/metrics.csv"] button.jp-mod-open').click()
    preview = files.locator(".jp-TaskRun-filePreviewText")
    preview.wait_for(timeout=10000)
    assert preview.text_content() == (lab_server.root / folder / "metrics.csv").read_text()
    files.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "results-02-files.png"))

    # Download HTML, with and without the code: what the server's nbconvert export answers
    for button, query, has_code in (("jp-mod-html", "", True), ("jp-mod-htmlNoInput", "&no_input=1", False)):
        with page.expect_download(timeout=60000) as info:
            files.locator(f"button.{button}").click()
        got = Path(info.value.path()).read_bytes()
        expected = raw_get(lab_server, f"taskrun/api/tasks/{task['id']}/notebook?format=html{query}")
        assert got == expected
        html = got.decode()
        assert "<html" in html and "trained" in html
        assert (f"marker_{uid[-6:]}" in html) is has_code
        assert info.value.suggested_filename.endswith(".html")
    assert not [e for e in page.errors if "pageerror" in e], page.errors


# ---------------------------------------------------------------------- sidebar


def visible_ids(page: Any) -> list[str]:
    return page.evaluate(f"() => [...document.querySelectorAll('{PANEL} .jp-TaskRun-row')].map(r => r.dataset.taskId)")


def run_scored(api: Any, tag: str, name: str, scores: list[float], extra: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    tasks = []
    for i, score in enumerate(scores):
        code = f"from jupyter_taskrun import record\nrecord({name!r}, {score!r})\nprint('done {i}')"
        tasks.append(api.submit(code=code, name=f"{tag}-run{i}", tags=[tag], **(extra or {}).get(i, {})))
    for t in tasks:
        assert api.wait_status(t["id"], {"completed", "failed"}, timeout=90)["status"] == "completed"
    return tasks


def test_sidebar_value_column_sorts_on_the_server(lab_page: Any, api: Any, lab_server: Any, artifacts_dir: Path) -> None:
    page = lab_page
    tag = unique("col")
    name = f"acc_{tag[-6:]}"
    tasks = run_scored(api, tag, name, [0.5, 0.9, 0.7])
    by_score = {t["id"]: s for t, s in zip(tasks, [0.5, 0.9, 0.7], strict=True)}
    panel = open_panel(page)
    panel.locator("input.jp-TaskRun-tagFilter").fill(tag)
    wait_until(lambda: set(visible_ids(page)) == set(by_score), 15, "the tagged tasks only")

    sorts: list[str] = []
    page.on(
        "request",
        lambda r: (
            sorts.extend(urllib.parse.parse_qs(urllib.parse.urlsplit(r.url).query).get("sort", []))
            if "/taskrun/api/tasks" in r.url
            else None
        ),
    )
    panel.locator(".jp-TaskRun-valueChooserButton").click()
    panel.locator(f'.jp-TaskRun-valueChoice input[value="{name}"]').check()
    cells = page.locator(f'{PANEL} .jp-TaskRun-valueCell[data-name="{name}"]')
    wait_until(lambda: cells.count() == 3, 10, "a value cell per row")
    for task_id, score in by_score.items():
        assert float(row(page, task_id).locator(f'.jp-TaskRun-valueCell[data-name="{name}"]').text_content()) == score
    panel.locator(".jp-TaskRun-counts").click()  # a click elsewhere closes the chooser
    assert panel.locator(".jp-TaskRun-valueChooser").is_hidden()

    header = panel.locator(f'.jp-TaskRun-valueHeaderCell[data-name="{name}"]')
    header.click()
    asc = [t for t, _ in sorted(by_score.items(), key=lambda kv: kv[1])]
    wait_until(lambda: visible_ids(page) == asc, 10, "ascending by the value")
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    wait_until(lambda: visible_ids(page) == asc[::-1], 10, "descending by the value")
    wait_until(lambda: f"-values.{name}" in sorts, 10, "the server was asked to sort")
    assert f"values.{name}" in sorts
    # the server's order agrees with the page's
    server = api.get(f"taskrun/api/tasks?tag={tag}&sort=-values.{name}")
    assert [t["id"] for t in server["tasks"]] == asc[::-1]
    page.screenshot(path=str(artifacts_dir / "results-03-sidebar-value-column.png"))

    # remembered: after a reload the column (a setting) and the sort (Lab's state database, saved
    # with the workspace: so no ?reset here, which would clear it) are back
    wait_until(lambda: f"-values.{name}" in str(api.get("lab/api/workspaces/default")), 15, "the sort saved")
    page.goto(f"{lab_server.url}lab?token={lab_server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60000)
    page.wait_for_selector('.lm-TabBar-tab[data-id="jupyter-taskrun-panel"]', timeout=30000)
    panel = open_panel(page)
    panel.locator("input.jp-TaskRun-tagFilter").fill(tag)
    header = panel.locator(f'.jp-TaskRun-valueHeaderCell[data-name="{name}"]')
    header.wait_for(timeout=15000)
    assert header.get_attribute("aria-sort") == "descending"
    wait_until(lambda: visible_ids(page) == asc[::-1], 15, "the remembered sort after a reload")
    header.click()  # ends with newest first again (third click)
    wait_until(lambda: header.get_attribute("aria-sort") == "none", 5, "sort off")


# ---------------------------------------------------------------------- compare


def compare_rows(page: Any, column: str) -> list[tuple[str, str]]:
    return page.evaluate(
        """(col) => [...document.querySelectorAll('.jp-TaskRun-compare .jp-TaskRun-compareRow')].map(r =>
            [r.dataset.taskId, r.querySelector(`td[data-column="${col}"]`).textContent])""",
        column,
    )


def test_compare_tasks_sharing_a_tag(lab_page: Any, api: Any, artifacts_dir: Path) -> None:
    page = lab_page
    tag = unique("cmp")
    name = f"score_{tag[-6:]}"
    scores = [0.61, 0.88, 0.42, 0.75]
    lrs = [0.1, 0.01, 0.3, 0.05]
    extra = {i: {"parameters": {"lr": lr, "model": f"m{i}"}} for i, lr in enumerate(lrs)}
    tasks = run_scored(api, tag, name, scores, extra)
    other = api.submit(code="print('not compared')", name=f"other-{tag}", tags=[f"{tag}x"])
    api.wait_status(other["id"], {"completed"}, timeout=60)

    # from a task: its tag in the Values section
    detail = open_detail(page, tasks[0]["id"])
    link = detail.locator(f'.jp-TaskRun-compareLink[data-scope="tag:{tag}"]')
    link.wait_for(timeout=15000)
    link.click()
    view = page.locator(".jp-TaskRun-compare")
    view.wait_for(state="visible", timeout=20000)
    wait_until(lambda: len(compare_rows(page, "name")) == 4, 15, "the four tagged tasks, not the other one")
    heads = page.evaluate("() => [...document.querySelectorAll('.jp-TaskRun-compareHead')].map(h => h.dataset.column)")
    assert heads[:3] == ["name", "status", "duration"]
    assert f"value:{name}" in heads
    # parameters: read from the executed notebooks' injected-parameters cell
    wait_until(
        lambda: (
            {"param:lr", "param:model"}
            <= set(page.evaluate("() => [...document.querySelectorAll('.jp-TaskRun-compareHead')].map(h => h.dataset.column)"))
        ),
        20,
        "a column per parameter",
    )
    ids = [t["id"] for t in tasks]
    wait_until(
        lambda: dict(compare_rows(page, "param:lr")) == {i: str(lr) for i, lr in zip(ids, lrs, strict=True)},
        20,
        "each task's parameter",
    )
    assert dict(compare_rows(page, f"value:{name}")) == {i: str(s) for i, s in zip(ids, scores, strict=True)}
    assert {s for _, s in compare_rows(page, "status")} == {"Completed"}

    # sort by a header click: the value, ascending then descending
    sort = page.locator(f'.jp-TaskRun-compareHead[data-column="value:{name}"] button')
    sort.click()
    asc = [i for i, _ in sorted(zip(ids, scores, strict=True), key=lambda p: p[1])]
    assert [i for i, _ in compare_rows(page, "name")] == asc
    sort.click()
    assert [i for i, _ in compare_rows(page, "name")] == asc[::-1]
    page.locator('.jp-TaskRun-compareHead[data-column="param:lr"] button').click()
    assert [i for i, _ in compare_rows(page, "name")] == [i for i, _ in sorted(zip(ids, lrs, strict=True), key=lambda p: p[1])]
    page.screenshot(path=str(artifacts_dir / "results-04-compare.png"))

    # live: a new task with the tag appears in the open view
    late = run_scored(api, tag, name, [0.99])[0]
    wait_until(lambda: late["id"] in dict(compare_rows(page, "name")), 20, "a new tagged task joins the view")
    wait_until(lambda: dict(compare_rows(page, f"value:{name}")).get(late["id"]) == "0.99", 20, "with its value")

    # from the sidebar: the row's context menu, one tab per tag (the same view is revealed)
    open_panel(page)
    row(page, tasks[1]["id"]).click(button="right")
    page.locator(".lm-Menu-item", has_text=f"Compare Tasks Tagged #{tag}").first.click()
    time.sleep(0.5)
    assert page.locator(".jp-TaskRun-compareWidget").count() == 1
    assert view.is_visible()
