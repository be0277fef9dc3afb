"""The one definition of a submission (``jupyter_taskrun/schemas/submission.json``) and its copies.

Unit tests, no server: the generated TypeScript and the OpenAPI ``Submission`` schema equal what the
generator makes from the definition (so CI catches a hand edit or a forgotten regeneration); the
definition is a valid JSON Schema whose two readers (fastjsonschema at run time, jsonschema here) agree;
the OpenAPI copy is never stricter than the definition; refusals keep their messages and ``reason``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jsonschema
import pytest

from jupyter_taskrun import schema
from jupyter_taskrun.errors import InvalidSubmission
from jupyter_taskrun.models import SOURCE_KINDS, TaskSubmission

NB = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": "1", "metadata": {}, "outputs": [], "execution_count": None}]}  # fmt: skip

GOOD = [
    {"code": ""}, {"code": "print(1)", "name": "résumé ✓ 🚀", "tags": ["a", "a", "b"], "priority": -1000},
    {"cells": ["1", ""], "timeout": 1.5, "cell_timeout": 1}, {"path": "a/b.ipynb", "cwd": ""}, {"notebook": NB},
    {"path": "job.py", "args": ["--x", ""]}, {"code": "1", "args": []}, {"cells": ["1"], "args": []},
    {"code": "1", "env": {"A_1": "", "_b": "x"}, "resources": {"GPU": 0, "memory": 2.5}, "memory_limit": 2**40},
    {"code": "1", "parameters": {"café": [1, {"x": None}], "n": 1.5}, "kernel_name": "python3"},
    {"code": "1", "name": None, "path": None, "cells": None, "tags": None}, {"code": "1", "priority": 3.0},
    {"code": "1", "name": "x" * 200, "tags": ["t" * 64] * 32}, {"path": "p" * 4093 + ".py"},
]  # fmt: skip

# (body, words the message must hold)
BAD = [
    ([{"code": "1"}], "JSON object"), ("code", "JSON object"), (None, "JSON object"),
    ({}, "exactly one of 'code', 'cells', 'path' or 'notebook'"), ({"name": "x"}, "exactly one of"),
    ({"code": "1", "path": "a.py"}, "exactly one source, not code and path"), ({"code": None, "cells": None}, "exactly one of"),
    ({"code": "1", "bogus": True}, "unknown field(s): bogus"), ({"code": "1", "bogus": None}, "unknown field(s): bogus"),
    ({"code": 5}, "'code' must be a string, not integer"), ({"code": 5, "path": "a.py"}, "'code' must be a string"),
    ({"cells": []}, "'cells' must be a non-empty list"), ({"cells": "x"}, "'cells' must be a list of strings"),
    ({"cells": ["1", 2]}, "'cells[1]' must be a string"), ({"cells": ["1", "a\x00"]}, "'cells[1]' must not contain NUL"),
    ({"code": "1", "name": "a\x00b"}, "'name' must not contain NUL characters"), ({"code": "1", "name": " \t"}, "'name' must not be empty"),
    ({"code": "1", "name": "x" * 201}, "'name' is longer than 200 characters"), ({"path": "job.txt"}, "must name a .py script or a .ipynb"),
    ({"path": "a.py\n"}, "must name a .py script"), ({"path": "p" * 4097 + ".py"}, "longer than 4096"), ({"notebook": "x"}, "notebook's JSON object"),
    ({"notebook": {"cells": []}}, "nbformat"), ({"code": "1", "kernel_name": []}, "'kernel_name' must be a string, not array"),
    ({"code": "1", "parameters": []}, "'parameters' must be an object"), ({"code": "1", "parameters": {"a b": 1}}, "parameter name 'a b' is not a Python identifier"),
    ({"code": "1", "parameters": {"x": math.nan}}, "finite"), ({"code": "1", "parameters": {"x": "\ud800"}}, "lone surrogate"),
    ({"code": "1", "timeout": -1}, "'timeout' must be greater than 0"), ({"code": "1", "timeout": 0}, "greater than 0"),
    ({"code": "1", "timeout": True}, "'timeout' must be a number, not boolean"), ({"code": "1", "cell_timeout": "5"}, "must be a number"),
    ({"code": "1", "timeout": 10**400}, "'timeout' is too large"), ({"code": "1", "resources": {"g": -(10**400)}}, "at least 0"),
    ({"code": "1", "timeout": math.nan}, "'timeout' must be finite"), ({"code": "1", "cell_timeout": math.inf}, "'cell_timeout' must be finite"),
    ({"code": "1", "env": []}, "'env' must be an object of strings"), ({"code": "1", "env": {"A": 1}}, "'env.A' must be a string"),
    ({"code": "1", "env": {"1BAD": "x"}}, "environment variable name '1BAD' is not valid"), ({"code": "1", "env": {"A\n": "x"}}, "not valid"),
    ({"code": "1", "env": {"A": "x\x00"}}, "'env.A' must not contain NUL"), ({"code": "1", "env": {"A": "\udfff"}}, "'env.A' is not valid Unicode"),
    ({"code": "1", "cwd": 5}, "'cwd' must be a string"), ({"code": "1", "tags": "x"}, "'tags' must be a list of strings"),
    ({"code": "1", "tags": ["x" * 65]}, "'tags[0]' is longer than 64"), ({"code": "1", "tags": ["t"] * 33}, "'tags' may hold at most 32 items"),
    ({"code": "1", "tags": [""]}, "'tags[0]' must not be empty"), ({"code": "1", "priority": 1.5}, "'priority' must be an integer"),
    ({"code": "1", "priority": 1001}, "'priority' must be between -1000 and 1000"), ({"code": "1", "priority": "1"}, "integer"),
    ({"code": "1", "memory_limit": 0}, "'memory_limit' must be greater than 0"), ({"code": "1", "memory_limit": 1.5}, "integer"),
    ({"code": "1", "resources": []}, "'resources' must be an object of numbers"), ({"code": "1", "resources": {"GPU": "1"}}, "'resources.GPU' must be a number"),
    ({"code": "1", "resources": {"GPU": -1}}, "'resources.GPU' must be at least 0"), ({"code": "1", "resources": {" ": 1}}, "key ' ' of 'resources' must not be empty"),
    ({"code": "1", "resources": {"r" * 101: 1}}, "of 'resources' is longer than 100"), ({"code": "1", "resources": {"\ud800": 1}}, "lone surrogate"),
    ({"code": "1", "args": "a"}, "'args' must be a list of strings"), ({"code": "1", "args": [1]}, "'args[0]' must be a string"),
    ({"code": "1", "args": ["a"] * 1001}, "'args' may hold at most 1000"), ({"cells": ["1"], "args": ["a"]}, "give 'code' or a 'path' to a .py file"),
    ({"path": "nb.ipynb", "args": ["a"]}, "command-line arguments"), ({"code": "print('\ud800')"}, "'code' is not valid Unicode (lone surrogate)"),
]  # fmt: skip


def _plain(data):
    """``data`` as the definition sees it: null fields of a known name dropped."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if v is not None or k not in TaskSubmission.FIELDS}


# ---------------------------------------------------------------- generated files


def test_checked_in_typescript_is_the_generators_output():
    assert schema.TS_PATH.read_text(encoding="utf-8") == schema.typescript_submission(), (
        "labextension/src/generated/submission.ts is out of date: run python -m jupyter_taskrun.schema ts"
    )


def test_openapi_submission_schema_is_made_from_the_definition():
    on_disk = json.loads(schema.OPENAPI_PATH.read_text(encoding="utf-8"))
    assert on_disk["components"]["schemas"]["Submission"] == schema.openapi_submission_schema(), (
        "openapi.json's Submission schema is out of date: run python -m jupyter_taskrun.schema openapi"
    )
    from jupyter_taskrun.server.handlers.openapi import load_spec

    assert load_spec() == on_disk  # what the server serves is the checked-in document
    assert schema.main(["--check"]) == 0


def test_openapi_copy_uses_only_openapi_30_keywords():
    allowed = {
        "title", "description", "type", "properties", "additionalProperties", "items", "required", "enum",
        "allOf", "oneOf", "anyOf", "not", "pattern", "minLength", "maxLength", "minItems", "maxItems",
        "minimum", "maximum", "exclusiveMinimum", "nullable", "format",
    }  # fmt: skip
    stack = [schema.openapi_submission_schema()]
    while stack:
        node = stack.pop()
        assert set(node) <= allowed, set(node) - allowed
        assert isinstance(node.get("exclusiveMinimum", False), bool), node  # 3.0: a flag beside 'minimum'
        for key, value in node.items():
            if key == "properties":
                stack.extend(value.values())
            elif isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, list) and key != "required" and key != "enum":
                stack.extend(value)


# ---------------------------------------------------------------- the definition


def test_the_definition_is_valid_json_schema_and_names_the_dataclass_fields():
    definition = schema.submission_definition()
    jsonschema.Draft7Validator.check_schema(definition)
    assert TaskSubmission.FIELDS == tuple(f.name for f in dataclasses.fields(TaskSubmission))
    assert SOURCE_KINDS == ("code", "cells", "path", "notebook")


def _jsonschema_validator():
    checker = jsonschema.FormatChecker()
    for name, check in schema.FORMATS.items():
        checker.checks(name)(check)
    return jsonschema.Draft7Validator(schema.submission_definition(), format_checker=checker)


@pytest.mark.parametrize("body", [b for b, _ in BAD] + GOOD)
def test_fastjsonschema_and_jsonschema_read_the_definition_alike(body):
    data = _plain(body)
    if '\\n"' in json.dumps(data):
        pytest.skip("jsonschema reads '$' as Python does (before a final newline); the server as JSON Schema does")
    try:
        schema.validate_submission(body)
        fast = True
    except InvalidSubmission:
        fast = False
    assert fast == _jsonschema_validator().is_valid(data), body


@pytest.mark.parametrize("body", GOOD + [b for b, _ in BAD])
def test_openapi_copy_is_never_stricter_than_the_definition(body):
    """What the server accepts, the OpenAPI schema accepts (fuzzers then never see a valid body refused)."""
    try:
        schema.validate_submission(body)
    except InvalidSubmission:
        return
    # OpenAPI 3.0's bounds are draft 4's; its 'integer' is read as fuzzers read it (2.0 is whole)
    validator = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=jsonschema.Draft7Validator.TYPE_CHECKER)
    assert validator(schema.openapi_submission_schema()).is_valid(_plain(body)), body


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("body", GOOD)
def test_good_submissions_are_accepted(body):
    sub = TaskSubmission.from_dict(body)
    assert sub.source_kind in SOURCE_KINDS
    assert isinstance(sub.priority, int) and (sub.memory_limit is None or isinstance(sub.memory_limit, int))
    assert sub.tags == list(dict.fromkeys(sub.tags))
    assert TaskSubmission.from_dict(sub.to_dict()) == sub  # a rerun repeats it exactly


@pytest.mark.parametrize("body, words", BAD)
def test_bad_submissions_are_refused_with_a_clear_message(body, words):
    with pytest.raises(InvalidSubmission) as info:
        TaskSubmission.from_dict(body)
    assert info.value.reason == "invalid"
    assert words in str(info.value), str(info.value)
    assert "data" not in str(info.value).split("'")[0]  # never the validator's own wording ("data.code must ...")


def test_the_submission_is_a_copy_of_the_callers_values():
    body = {"cells": ["1"], "env": {"A": "x"}, "tags": ["t"], "code": None}
    sub = TaskSubmission.from_dict(body)
    body["cells"].append("2")
    body["env"]["B"] = "y"
    assert sub.cells == ["1"] and sub.env == {"A": "x"} and sub.code is None


def test_parameters_deeper_than_the_limit_are_refused():
    deep: dict = {}
    for _ in range(70):
        deep = {"k": deep}
    with pytest.raises(InvalidSubmission, match="nested too deeply: at most 64 levels"):
        TaskSubmission.from_dict({"code": "1", "parameters": {"p": deep}})
