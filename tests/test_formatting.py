"""The one formatting convention (jupyter_taskrun.formatting), pinned to the shared example table
that labextension/src/format.ts is checked against too."""

import json
from pathlib import Path

import pytest

from jupyter_taskrun.formatting import executed_notebook_name, format_bytes, format_duration, strip_ansi

EXAMPLES = json.loads((Path(__file__).parent / "formatting_examples.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("seconds", "text"), EXAMPLES["duration"])
def test_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("n", "text"), EXAMPLES["bytes"])
def test_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(("args", "name"), EXAMPLES["executed_name"])
def test_executed_notebook_name(args, name):
    assert executed_notebook_name(*args) == name


@pytest.mark.parametrize(("raw", "clean"), EXAMPLES["strip_ansi"])
def test_strip_ansi(raw, clean):
    assert strip_ansi(raw) == clean
