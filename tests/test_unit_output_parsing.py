"""Unit tests of ``execution/output_parsing.py`` (no server, no kernel) on real text.

tqdm bars are written by the ``tqdm`` package itself into a ``StringIO``; ``SystemExit``
codes are compared with what a real ``python`` process exits with; crash reports are
the ones faulthandler writes for a real segfault.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from tqdm import tqdm

from jupyter_taskrun.execution.output_parsing import crash_location, crash_report, parse_tqdm, system_exit_code

# ---------------------------------------------------------------------------
# tqdm
# ---------------------------------------------------------------------------


def tqdm_text(updates: list[int], **options) -> str:
    """What tqdm writes to stderr for these updates (every update redrawn, bar left open)."""
    out = io.StringIO()
    bar = tqdm(file=out, mininterval=0, miniters=1, **options)
    for n in updates:
        bar.update(n)
    text = out.getvalue()
    bar.close()
    return text


@pytest.mark.parametrize("ascii_bar", [True, False], ids=["ascii", "unicode"])
def test_tqdm_bar_with_description(ascii_bar):
    text = tqdm_text([1, 1, 1], total=10, desc="train", ascii=ascii_bar)
    assert ("█" in text) is not ascii_bar
    assert parse_tqdm(text) == {"value": 3, "total": 10, "message": "train"}


def test_tqdm_bar_without_description():
    assert parse_tqdm(tqdm_text([4], total=7)) == {"value": 4, "total": 7, "message": ""}


def test_tqdm_last_state_of_a_chunk_wins():
    text = tqdm_text([1] * 9, total=10, desc="epoch")
    assert text.count("\r") >= 9  # every redraw is in the chunk
    assert parse_tqdm(text) == {"value": 9, "total": 10, "message": "epoch"}


def test_tqdm_finished_bar():
    out = io.StringIO()
    for _ in tqdm(range(5), file=out, mininterval=0, desc="done"):
        pass
    assert out.getvalue().endswith("\n")
    assert parse_tqdm(out.getvalue()) == {"value": 5, "total": 5, "message": "done"}


def test_tqdm_scaled_units():
    text = tqdm_text([150_000] * 3, total=2_000_000, unit_scale=True, unit="B", desc="download")
    assert "450k/2.00M" in text
    assert parse_tqdm(text) == {"value": 450_000, "total": 2_000_000, "message": "download"}


def test_tqdm_fractional_scaled_value():
    text = tqdm_text([1_500_000], total=4_000_000, unit_scale=True)
    assert "1.50M/4.00M" in text
    assert parse_tqdm(text) == {"value": 1_500_000, "total": 4_000_000, "message": ""}


def test_tqdm_description_with_colon_and_spaces():
    assert parse_tqdm(tqdm_text([2], total=4, desc="stage 2: fit"))["message"] == "stage 2: fit"


def test_tqdm_bar_among_other_stderr_text():
    text = "warning: something\n" + tqdm_text([3], total=6, desc="work") + "more text\n"
    assert parse_tqdm(text) == {"value": 3, "total": 6, "message": "work"}


def test_tqdm_bar_cut_at_the_end_of_a_chunk_keeps_the_last_whole_state():
    text = tqdm_text([1, 1], total=10, desc="cut")
    partial = tqdm_text([1, 1, 1], total=10, desc="cut").rsplit("\r", 1)[1]
    assert parse_tqdm(text + "\r" + partial[: partial.index("|") + 3]) == {"value": 2, "total": 10, "message": "cut"}


def test_tqdm_counter_without_total_is_no_bar():
    text = tqdm_text([1, 1], desc="lines")
    assert "2it [" in text
    assert parse_tqdm(text) is None


@pytest.mark.parametrize("text", ["", "plain output\n", "50% done\n", "loss|0.3|", "|||"])
def test_no_tqdm_bar(text):
    assert parse_tqdm(text) is None


# ---------------------------------------------------------------------------
# SystemExit
# ---------------------------------------------------------------------------


def python_exit_status(arg: str) -> int:
    return subprocess.run([sys.executable, "-c", f"import sys; sys.exit({arg})"], capture_output=True).returncode


@pytest.mark.parametrize("arg", ["", "0", "3", "255", "None", "True", "False", "'a message'", "3.5", "[1, 2]"])
def test_system_exit_code_is_what_python_exits_with(arg):
    evalue = str(eval(f"SystemExit({arg})"))  # what IPython reports as the error's evalue
    assert system_exit_code("SystemExit", evalue) == python_exit_status(arg)


@pytest.mark.parametrize("arg", ["256", "-1"])
def test_system_exit_code_out_of_range(arg):
    assert system_exit_code("SystemExit", str(eval(f"SystemExit({arg})"))) == python_exit_status(arg)


def test_system_exit_code_stated_examples():
    assert system_exit_code("SystemExit", "") == 0
    assert system_exit_code("SystemExit", None) == 0
    assert system_exit_code("SystemExit", " 3 ") == 3
    assert system_exit_code("SystemExit", "message") == 1


@pytest.mark.parametrize("ename", [None, "ValueError", "KeyboardInterrupt", "systemexit"])
def test_other_errors_are_no_exit(ename):
    assert system_exit_code(ename, "3") is None


# ---------------------------------------------------------------------------
# faulthandler reports
# ---------------------------------------------------------------------------

CRASH = textwrap.dedent(
    """\
    import ctypes, faulthandler, sys, threading, time

    def idle():
        time.sleep(30)

    def crash():
        ctypes.string_at(0)

    faulthandler.enable(all_threads=sys.argv[1] == "all")
    threading.Thread(target=idle, daemon=True).start()
    time.sleep(0.1)
    print("before the crash", file=sys.stderr, flush=True)
    crash()
    """
)


def crash_stderr(tmp_path, threads: str) -> tuple[str, str]:
    script = tmp_path / "crashing.py"
    script.write_text(CRASH)
    proc = subprocess.run([sys.executable, str(script), threads], capture_output=True, text=True, timeout=30)
    assert proc.returncode < 0 or proc.returncode > 128, proc  # killed by SIGSEGV
    return proc.stderr, str(script)


def test_crash_report_and_location_of_the_current_thread(tmp_path):
    stderr, script = crash_stderr(tmp_path, "all")
    assert "Current thread" in stderr and "\nThread 0x" in stderr  # another thread is listed too
    report = crash_report(stderr)
    assert report[0] == "Fatal Python error: Segmentation fault"
    assert "before the crash" not in "\n".join(report)
    assert all(line.strip() for line in report)
    where = crash_location(report)
    # the innermost frame of the crashing thread, not of the idle one listed first
    assert where is not None and where.endswith(" in string_at"), where
    assert "idle" not in where
    crash_frame = next(line.strip() for line in report if line.strip().endswith(" in crash"))
    assert crash_frame == f'File "{script}", line 7 in crash'


def test_crash_location_without_thread_headers_is_the_first_frame(tmp_path):
    stderr, _ = crash_stderr(tmp_path, "one")
    report = crash_report(stderr)
    assert any(line.startswith("Stack (most recent call first)") for line in report), report
    assert crash_location(report).endswith(" in string_at")


def test_the_last_report_of_a_stderr_is_taken():
    first = 'Fatal Python error: Aborted\n\nCurrent thread 0x1 (most recent call first):\n  File "a.py", line 1 in a\n'
    second = 'Fatal Python error: Segmentation fault\n\nCurrent thread 0x2 (most recent call first):\n  File "b.py", line 2 in b\n'
    report = crash_report(first + "noise\n" + second)
    assert report[0] == "Fatal Python error: Segmentation fault"
    assert crash_location(report) == 'File "b.py", line 2 in b'


def test_no_report():
    assert crash_report("") == []
    assert crash_report('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n') == []
    assert crash_location([]) is None
    assert crash_location(["Fatal Python error: Aborted", "no frames here"]) is None


def test_crash_report_is_bounded():
    stderr = "Fatal Python error: Segmentation fault\n" + "".join(f'  File "f.py", line {i} in f\n' for i in range(1000))
    assert len(crash_report(stderr)) == 200
