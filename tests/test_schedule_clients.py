"""Schedules through every client side: the CLI (a subprocess), the sync and async Python clients,
and the magics (a notebook run by nbclient in a real kernel), all against one real ``jupyter
server`` subprocess; what each created is checked through REST. No mocks.

Crons are chosen not to fire during a test (a yearly one, or paused) except where a firing could
not change the assertion; each test deletes its schedules, so none fires after it.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from datetime import datetime

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_taskrun.cli_schedule import schedule_lines, schedule_table
from jupyter_taskrun.client import AsyncTaskRunClient, TaskRunClient, TaskRunHTTPError
from jupyter_taskrun.client.resolve import AmbiguousScheduleRef, NoSuchSchedule, resolve_schedule

from ._server import taskrun_server
from .test_magic import run_notebook, text_of

HEX32 = re.compile(r"^[0-9a-f]{32}$")
#: 04:05 on 29 February: fires once in four years, never during a test
RARE = "5 4 29 2 *"


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with taskrun_server(tmp_path_factory.mktemp("taskrun-schedules")) as srv:
        yield srv


@pytest.fixture
def client(server) -> TaskRunClient:
    return TaskRunClient(server.url, server.token)


@pytest.fixture
def cleanup(client):
    """Schedule ids to delete at the end of the test (whatever happened)."""
    ids: list[str] = []
    yield ids
    for schedule_id in ids:
        try:
            client.delete_schedule(schedule_id)
        except TaskRunHTTPError as e:
            assert e.status == 404


def cli(server, *args, timeout=120):
    cmd = [sys.executable, "-m", "jupyter_taskrun.cli", *args]
    return subprocess.run(
        cmd, env={**server.env, "JUPYTER_TASKRUN_URL": server.url, "JUPYTER_TASKRUN_TOKEN": server.token},
        cwd=server.root, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def ok(proc) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def offset_of(iso: str) -> str:
    return iso[-6:]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_cli_schedule_add_list_show_pause_resume_run_rm(server, client, cleanup):
    nb = new_notebook(cells=[new_code_cell("day = 'default'"), new_code_cell("print('report for', day)")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, server.root / "nightly.ipynb")
    name = new_name("nightly")

    # add: the id on stdout, the cron in words and the next runs on stderr
    proc = cli(server, "schedule", "add", "nightly.ipynb", "--cron", "0 3 * * *", "--tz", "Europe/Berlin",
               "--param", "day=today", "--name", name, "--overlap", "queue", "--max-runs", "5", "--tag", "sched")  # fmt: skip
    schedule_id = ok(proc).strip()
    cleanup.append(schedule_id)
    assert HEX32.match(schedule_id), proc.stdout
    made = client.get_schedule(schedule_id)
    assert made["name"] == name and made["cron"] == "0 3 * * *" and made["timezone"] == "Europe/Berlin"
    assert made["task"]["path"] == "nightly.ipynb" and made["task"]["parameters"] == {"day": "today"}
    assert made["task"]["tags"] == ["sched"]
    assert made["overlap"] == "queue" and made["max_runs"] == 5 and made["enabled"] is True
    assert made["description"] in proc.stderr and "next runs:" in proc.stderr
    assert len(made["next_runs"]) == 5
    for iso in made["next_runs"]:  # 03:00 in Berlin, with Berlin's offset (winter or summer)
        assert "T03:00:00" in iso and offset_of(iso) in ("+01:00", "+02:00"), iso

    # list: a table row with the name, the description, the next run and "yes"
    table = ok(cli(server, "schedule", "list"))
    header, *rows = table.splitlines()
    assert header.split() == ["ID", "NAME", "SCHEDULE", "NEXT", "RUN", "LAST", "ENABLED"]
    row = next(r for r in rows if r.startswith(schedule_id[:12]))
    assert name in row and made["description"] in row and row.rstrip().endswith("yes")
    assert made["next_runs"][0][:10] in row
    listed = json.loads(ok(cli(server, "schedule", "list", "--json")))
    assert schedule_id in [s["id"] for s in listed]

    # show, by a prefix of the id: the detail, the next 5 runs, no history yet
    shown = ok(cli(server, "schedule", "show", schedule_id[:8]))
    assert "id:" in shown and schedule_id in shown and made["description"] in shown
    assert "path nightly.ipynb" in shown and 'day="today"' in shown
    assert sum(run[:16].replace("T", " ") in shown for run in made["next_runs"]) == 5
    assert "history: no tasks yet" in shown
    assert json.loads(ok(cli(server, "schedule", "show", schedule_id, "--json")))["id"] == schedule_id

    # pause and resume, by name
    assert "paused" in ok(cli(server, "schedule", "pause", name))
    paused = client.get_schedule(schedule_id)
    assert paused["enabled"] is False and paused["next_runs"] == []
    assert next(r for r in ok(cli(server, "schedule", "list")).splitlines() if r.startswith(schedule_id[:12])).rstrip().endswith("no")
    ok(cli(server, "schedule", "resume", schedule_id))
    assert len(client.get_schedule(schedule_id)["next_runs"]) == 5

    # run now, waiting: a task of this schedule, with its parameters
    proc = cli(server, "schedule", "run", schedule_id, "--wait")
    task_id = ok(proc).splitlines()[0].strip()
    assert "completed" in proc.stderr
    task = client.get(task_id)
    assert task["schedule_id"] == schedule_id and task["status"] == "completed"
    assert "report for today" in client.logs(task_id)

    # the history: in show, and through `list --schedule`
    shown = ok(cli(server, "schedule", "show", name))
    assert "history (newest first):" in shown and task_id in shown and "runs:" in shown
    history = json.loads(ok(cli(server, "list", "--schedule", schedule_id[:10], "--json")))
    assert task_id in [t["id"] for t in history] and {t["schedule_id"] for t in history} == {schedule_id}

    # rm: the schedule goes, its task stays
    assert "deleted" in ok(cli(server, "schedule", "rm", schedule_id))
    with pytest.raises(TaskRunHTTPError) as gone:
        client.get_schedule(schedule_id)
    assert gone.value.status == 404
    assert client.get(task_id)["schedule_id"] == schedule_id
    proc = cli(server, "schedule", "show", schedule_id)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_refusals_name_the_field_and_store_nothing(server, client):
    name = new_name("bad")
    before = {s["id"] for s in client.list_schedules()}
    for option, value, field in (("--cron", "61 * * * *", "cron"), ("--tz", "Mars/Olympus_Mons", "timezone")):
        args = ["--cron", "0 3 * * *", "--tz", "UTC"]
        args[args.index(option) + 1] = value
        proc = cli(server, "schedule", "add", "-c", "print(1)", "--name", name, *args)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert "HTTP 400" in line and field in line, line
    assert {s["id"] for s in client.list_schedules()} == before

    # usage errors are the CLI's own (exit 2): no --cron, a bad --overlap, a bad --max-runs
    for args in (["-c", "1"], ["-c", "1", "--cron", "@daily", "--overlap", "never"], ["-c", "1", "--cron", "@daily", "--max-runs", "0"]):
        proc = cli(server, "schedule", "add", *args)
        assert proc.returncode == 2, (args, proc.stderr)
    proc = cli(server, "schedule", "show", "no-such-schedule-" + uuid.uuid4().hex[:6])
    assert proc.returncode == 1 and "no schedule" in proc.stderr


# ---------------------------------------------------------------------------
# Python clients
# ---------------------------------------------------------------------------


def test_sync_client_schedules(client, cleanup):
    preview = client.preview_schedule("0 3 * * 1", "Europe/Berlin")
    assert preview["cron"] == "0 3 * * 1" and preview["timezone"] == "Europe/Berlin" and preview["description"]
    assert len(preview["next_runs"]) == 5
    assert all(datetime.fromisoformat(t).weekday() == 0 for t in preview["next_runs"])  # Mondays, in Berlin
    with pytest.raises(TaskRunHTTPError) as bad:
        client.preview_schedule("every tuesday")
    assert bad.value.status == 400 and "cron" in bad.value.message

    name = new_name("sync")
    s = client.create_schedule({"code": "print('from sync')", "tags": "sync-sched"}, RARE, name=name, timezone="UTC", enabled=False)
    cleanup.append(s["id"])
    assert s["name"] == name and s["enabled"] is False and s["next_runs"] == [] and s["task"]["tags"] == ["sync-sched"]
    assert s["overlap"] == "skip" and s["catch_up"] == "skip" and s["run_count"] == 0 and s["last_run"] is None
    assert client.get_schedule(s["id"]) == client.list_schedules()[0] == s  # newest first
    with pytest.raises(TaskRunHTTPError) as bad:
        client.create_schedule({"code": "1"}, RARE, overlap="sometimes")
    assert bad.value.status == 400 and "overlap" in bad.value.message

    changed = client.update_schedule(s["id"], cron="@yearly", max_runs=3, catch_up="run_once")
    assert (changed["cron"], changed["max_runs"], changed["catch_up"], changed["enabled"]) == ("@yearly", 3, "run_once", False)
    resumed = client.resume_schedule(s["id"])
    assert resumed["enabled"] is True and len(resumed["next_runs"]) == 3  # max_runs=3: no more than 3 to come
    assert all(t.endswith("-01-01T00:00:00+00:00") for t in resumed["next_runs"]), resumed["next_runs"]
    assert client.pause_schedule(s["id"])["next_runs"] == []

    # references: a prefix, a name; an unknown one
    assert resolve_schedule(client, s["id"][:6])["id"] == s["id"]
    assert resolve_schedule(client, name)["id"] == s["id"]
    with pytest.raises(NoSuchSchedule):
        resolve_schedule(client, "zz-" + name)

    # run now (even paused): a task of the schedule, in its history
    task = client.run_schedule(s["id"])
    assert task["schedule_id"] == s["id"] and task["scheduled_for"] is None
    assert client.wait(task["id"], timeout=120)["status"] == "completed"
    assert client.logs(task["id"]) == "from sync\n"
    assert [t["id"] for t in client.list(schedule=s["id"])["tasks"]] == [task["id"]]
    assert [t["id"] for t in client.iter_tasks(schedule=s["id"], page_size=1)] == [task["id"]]
    after = client.get_schedule(s["id"])
    assert after["run_count"] == 1 and after["last_run"]["task_id"] == task["id"] and after["counts"] == {"completed": 1}

    # the views render what the server sent
    assert any(line.startswith(s["id"][:12]) and line.rstrip().endswith("no") for line in schedule_table([after]))
    assert any(task["id"] in line for line in schedule_lines(after, [client.get(task["id"])]))

    client.delete_schedule(s["id"])
    with pytest.raises(TaskRunHTTPError) as gone:
        client.get_schedule(s["id"])
    assert gone.value.status == 404
    assert client.get(task["id"])["schedule_id"] == s["id"]  # its tasks are kept


def test_ambiguous_prefix_names_the_candidates(client, cleanup):
    # paused schedules until two ids share their first digit (ids are random: ~5 on average)
    made: dict[str, list[str]] = {}
    while not any(len(ids) > 1 for ids in made.values()):
        s = client.create_schedule({"code": "1"}, RARE, name=new_name("amb"), enabled=False)
        cleanup.append(s["id"])
        made.setdefault(s["id"][0], []).append(s["id"])
        assert len(cleanup) < 200
    first = next(k for k, ids in made.items() if len(ids) > 1)
    with pytest.raises(AmbiguousScheduleRef) as many:
        resolve_schedule(client, first.upper())  # case-insensitive, like task ids
    assert set(made[first]) <= {c["id"] for c in many.value.candidates}
    assert "give more of the id" in str(many.value)


def test_async_client_schedules(server, client, cleanup):
    async def scenario() -> tuple[dict, dict]:
        async with AsyncTaskRunClient(server.url, server.token) as ac:
            preview = await ac.preview_schedule("@daily", "UTC")
            assert [t[11:] for t in preview["next_runs"]] == ["00:00:00+00:00"] * 5
            s = await ac.create_schedule({"code": "print('from async')"}, RARE, name=new_name("async"), timezone="UTC")
            cleanup.append(s["id"])
            assert s in await ac.list_schedules() and (await ac.get_schedule(s["id"]))["id"] == s["id"]
            assert (await ac.update_schedule(s["id"], overlap="cancel_previous"))["overlap"] == "cancel_previous"
            assert (await ac.pause_schedule(s["id"]))["enabled"] is False
            assert (await ac.resume_schedule(s["id"]))["enabled"] is True
            task = await ac.run_schedule(s["id"])
            final = await ac.wait(task["id"], timeout=120)
            history = [t async for t in ac.iter_tasks(schedule=s["id"])]
            assert [t["id"] for t in (await ac.list(schedule=s["id"]))["tasks"]] == [t["id"] for t in history]
            await ac.delete_schedule(s["id"])
            try:
                await ac.get_schedule(s["id"])
            except TaskRunHTTPError as e:
                assert e.status == 404
            else:
                raise AssertionError("a deleted schedule is still there")
            with pytest.raises(TaskRunHTTPError) as bad:
                await ac.create_schedule({"code": "1"}, "@daily", timezone="Nowhere/Special")
            assert bad.value.status == 400 and "timezone" in bad.value.message
            return final, {"history": history}

    final, seen = asyncio.run(scenario())
    assert final["status"] == "completed" and final["schedule_id"]
    assert final["id"] in [t["id"] for t in seen["history"]]
    assert client.logs(final["id"]) == "from async\n"


# ---------------------------------------------------------------------------
# Magics
# ---------------------------------------------------------------------------


def test_magics_create_run_and_manage_schedules(server, client, cleanup):
    add_name, cell_name = new_name("magic-add"), new_name("magic-cell")
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_taskrun"),
            # 1 the line magic: the CLI's verbs and options
            new_code_cell(f"%taskrun schedule add --code \"print('from add')\" --cron '{RARE}' --tz UTC --name {add_name} --paused"),
            # 2 the cell magic: the cell is scheduled, not run
            new_code_cell(
                f'%%taskrun --cron "*/15 * * * *" --tz Europe/Berlin --name {cell_name} --param n=2 --as sched\nprint("cell", n)'
            ),
            new_code_cell("print('SCHED', sched['id'], sched['enabled'])"),
            new_code_cell("%taskrun schedule list"),
            new_code_cell(f"%taskrun schedule show {cell_name}"),
            # 6 run now: a task, with its panel; --wait blocks until it ends
            new_code_cell(f"%taskrun schedule run {cell_name} --wait"),
            new_code_cell(f"%taskrun schedule pause {cell_name}"),
            # 8 refusals: short UsageErrors
            new_code_cell("%taskrun schedule add --code 1 --cron 'every day'"),
            new_code_cell("%%taskrun --tz UTC\n1"),
            new_code_cell("%taskrun schedule show no-such-schedule-xyz"),
        ]
    )
    for c in nb.cells[8:]:
        c.metadata["tags"] = ["raises-exception"]
    try:
        replies = run_notebook(nb, server, server.root)
    finally:
        for s in client.list_schedules():
            if s["name"] in (add_name, cell_name):
                cleanup.append(s["id"])
    c = nb.cells

    # what the notebook created, seen through REST
    by_name = {s["name"]: s for s in client.list_schedules() if s["name"] in (add_name, cell_name)}
    added, celled = by_name[add_name], by_name[cell_name]
    assert added["task"]["code"] == "print('from add')" and added["enabled"] is False and added["timezone"] == "UTC"
    assert celled["task"]["code"].strip() == 'print("cell", n)' and celled["task"]["parameters"] == {"n": 2}
    assert celled["task"]["name"] == cell_name and celled["cron"] == "*/15 * * * *" and celled["timezone"] == "Europe/Berlin"
    assert celled["enabled"] is False  # paused by cell 7

    # what the notebook showed
    assert cell_name in text_of(c[2]) and "next runs:" in text_of(c[2])
    assert f"SCHED {celled['id']} True" in text_of(c[3])
    listing = text_of(c[4])
    assert add_name in listing and cell_name in listing and celled["description"] in listing
    assert celled["id"] in text_of(c[5]) and "next runs:" in text_of(c[5])
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c[6].outputs)  # the task's panel
    assert "completed" in text_of(c[6]) and "paused" in text_of(c[7])

    # the run: a task of the schedule that ran the cell with its parameter
    history = client.list(schedule=celled["id"])["tasks"]
    run_now = [t for t in history if t["scheduled_for"] is None]
    assert len(run_now) == 1 and run_now[0]["status"] == "completed"
    assert client.logs(run_now[0]["id"]) == "cell 2\n"

    for idx, needle in ((8, "cron"), (9, "--cron"), (10, "no schedule")):
        reply = replies[idx]
        assert reply["status"] == "error" and reply["ename"] == "UsageError", (idx, reply)
        assert needle in reply["evalue"], (idx, reply["evalue"])
