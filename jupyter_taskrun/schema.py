"""The one definition of a task submission (``schemas/submission.json``) and what is made from it.

``schemas/submission.json`` is a JSON Schema (draft 7) and the only place a submission's shape is
written down. From it come:

* the validation of ``TaskSubmission.from_dict`` (``validate_submission``): compiled once with
  fastjsonschema (already installed: nbformat requires it), which checks as fast as the hand-written
  checks it replaced, where ``jsonschema`` is ~25x slower on a 2000-cell body; refusals raise
  ``InvalidSubmission`` with a message written for people (``x-error`` templates in the definition,
  defaults below), never the validator's own wording;
* the ``Submission`` schema of the OpenAPI 3.0 document (``openapi_submission_schema``): the same
  rules in OpenAPI's dialect, minus what it cannot say (it is only ever looser, never stricter);
* the lab extension's TypeScript types (``typescript_submission``), checked in at
  ``labextension/src/generated/submission.ts``.

What JSON Schema cannot express (lone surrogates, finite numbers, nesting depth, ``max_cells``
from the server's config) stays as small checks next to ``from_dict`` in ``models.py``.

``python -m jupyter_taskrun.schema ts|openapi`` rewrites the generated files; ``--check`` only
reports drift (``tests/test_schema.py`` does the same in CI).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import textwrap
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import fastjsonschema

from .errors import InvalidSubmission

#: custom ``format`` values the definition uses, as fastjsonschema checks them
FORMATS: dict[str, Callable[[str], bool]] = {"python-identifier": str.isidentifier}
#: keywords of JSON Schema draft 7 that an OpenAPI 3.0 Schema Object does not have
_NOT_IN_OPENAPI_30 = {"$schema", "$id", "$comment", "definitions", "propertyNames", "if", "then", "else", "const", "contains"}

REPO_ROOT = Path(__file__).resolve().parents[1]
TS_PATH = REPO_ROOT / "labextension" / "src" / "generated" / "submission.ts"
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


@functools.lru_cache(maxsize=1)
def submission_definition() -> dict[str, Any]:
    """``schemas/submission.json`` as written (with its ``$ref`` s); callers must not mutate it."""
    text = files("jupyter_taskrun").joinpath("schemas", "submission.json").read_text(encoding="utf-8")
    return json.loads(text)


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/definitions/x"}`` replaced by (a copy of) ``x``, recursively."""
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/definitions/") or len(node) != 1:
            raise ValueError(f"only a lone local '#/definitions/...' $ref is supported, not {node!r}")
        return _inline_refs(definitions[ref.rsplit("/", 1)[1]], definitions)
    return {key: _inline_refs(value, definitions) for key, value in node.items() if key != "definitions"}


@functools.lru_cache(maxsize=1)
def _inlined() -> dict[str, Any]:
    """The definition without ``$ref`` s: each part stands alone, so each field compiles alone."""
    definition = submission_definition()
    return _inline_refs(definition, definition.get("definitions", {}))


#: the four fields of which a submission gives exactly one, in the definition's order
SOURCE_KINDS: tuple[str, ...] = tuple(branch["required"][0] for branch in submission_definition()["oneOf"])
#: every field a submission may carry, in the definition's order
FIELDS: tuple[str, ...] = tuple(submission_definition()["properties"])
_FIELD_SET = frozenset(FIELDS)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _compile(schema_json: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile({"$schema": _inlined()["$schema"], **json.loads(schema_json)}, formats=FORMATS)


@functools.lru_cache(maxsize=64)
def _compiled(key_path: str) -> Callable[[Any], Any]:
    """A validator for the inlined definition (``key_path`` "") or a part of it ("properties/env")."""
    schema: Any = _inlined()
    for part in key_path.split("/") if key_path else ():
        schema = schema[part]
    return _compile(json.dumps(schema, sort_keys=True))


def validate_submission(data: Any) -> dict[str, Any]:
    """``data`` checked against the definition; returns it without its null fields (null = absent).

    Raises ``InvalidSubmission`` naming the first offending field. The fast path is one call of the
    compiled validator; only a refusal pays for working out the message.
    """
    if isinstance(data, dict):  # an unknown field stays, to be refused even when null
        data = {key: value for key, value in data.items() if value is not None or key not in _FIELD_SET}
    try:
        _compiled("")(data)
    except fastjsonschema.JsonSchemaValueException as error:
        raise InvalidSubmission(_explain(data, error)) from None
    except RecursionError:  # a Python caller's self-referencing or absurdly deep value
        raise InvalidSubmission("a task submission is nested too deeply") from None
    return data


def _explain(data: Any, root_error: fastjsonschema.JsonSchemaValueException) -> str:
    """The clearest true reason ``data`` was refused: shape, unknown fields, each field, the sources."""
    if not isinstance(data, dict):
        return "a task submission must be a JSON object"
    unknown = sorted(str(key) for key in data if key not in _FIELD_SET)
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for name in FIELDS:  # the definition's order: the source first, then the options
        if name in data:
            try:
                _compiled(f"properties/{name}")(data[name])
            except fastjsonschema.JsonSchemaValueException as error:
                return _message(error, name)
    sources = [kind for kind in SOURCE_KINDS if kind in data]
    if not sources:
        return "give exactly one of " + ", ".join(f"'{k}'" for k in SOURCE_KINDS[:-1]) + f" or '{SOURCE_KINDS[-1]}'"
    if len(sources) > 1:
        return f"give exactly one source, not {' and '.join(sources)}"
    return _message(root_error)  # a rule across fields, e.g. 'args' without a script


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_ARTICLE_TYPES = {"string": "a string", "number": "a number", "integer": "an integer", "boolean": "a boolean"}


def _expected(schema: dict[str, Any]) -> str:
    """What a schema's ``type`` asks for, in words: 'a list of strings', 'an object of numbers'."""
    kind = schema.get("type")
    if kind == "array":
        inner = schema.get("items", {}).get("type")
        return "a list" + (f" of {inner}s" if isinstance(inner, str) else "")
    if kind == "object":
        inner = schema.get("additionalProperties")
        return "an object" + (f" of {inner['type']}s" if isinstance(inner, dict) and "type" in inner else "")
    return _ARTICLE_TYPES.get(str(kind), f"of type {kind}")


def _default_template(rule: str, schema: dict[str, Any]) -> str:
    limit = schema.get(rule)
    if rule == "type":
        return "{field} must be {expected}, not {actual}"
    if rule == "minLength":
        return "{field} must not be empty" if limit == 1 else "{field} must be at least {limit} characters long"
    if rule == "maxLength":
        return "{field} is longer than {limit} characters"
    if rule == "minItems":
        return "{field} must be a non-empty list" if limit == 1 else "{field} must hold at least {limit} items"
    if rule == "maxItems":
        return "{field} may hold at most {limit} items"
    if rule in ("minimum", "maximum") and "minimum" in schema and "maximum" in schema:
        return f"{{field}} must be between {schema['minimum']:g} and {schema['maximum']:g}"
    if rule == "minimum":
        return "{field} must be at least {limit:g}"
    if rule == "maximum":
        return "{field} must be at most {limit:g}"
    if rule == "exclusiveMinimum":
        return "{field} must be greater than {limit:g}"
    if rule == "pattern":
        return "{field} must match the pattern {limit}"
    return "{field} is not valid"


def _message(error: fastjsonschema.JsonSchemaValueException, base: str = "", field: str | None = None) -> str:
    """``error`` in words; it was raised checking field ``base`` ("" for the whole submission).

    ``field`` overrides how the checked value is named (a key of an object, say).
    """
    where = (error.name or "data")[len("data") :]  # "", "[3]" or ".NAME": where below the checked value
    if field is None:
        field = f"'{base}{where}'" if base or where else "a task submission"
    schema = error.definition if isinstance(error.definition, dict) else {}
    rule = error.rule or ""
    custom = schema.get("x-error")
    template = custom if isinstance(custom, str) else (custom or {}).get(rule)
    bad_key = None
    if rule == "propertyNames" and isinstance(error.value, dict):
        check_name = _compile(json.dumps(schema["propertyNames"], sort_keys=True))
        for key in error.value:
            try:
                check_name(key)
            except fastjsonschema.JsonSchemaValueException as key_error:
                if template is None:  # no message for the object: say what is wrong with the key
                    return _message(key_error, field=f"key {key!r} of {field}")
                bad_key = key
                break
    try:
        return (template or _default_template(rule, schema)).format(
            field=field, key=bad_key, limit=schema.get(rule), expected=_expected(schema), actual=_json_type(error.value)
        )
    except (ValueError, TypeError, KeyError, IndexError):  # a template that does not fit: the validator's words
        return f"{field} is not valid: {error.message}"


# ---------------------------------------------------------------------------
# OpenAPI 3.0
# ---------------------------------------------------------------------------


NO_NUL_PATTERN = "^[^\\u0000]*$"


def _to_openapi(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_IN_OPENAPI_30 or key.startswith("x-") or (key == "format" and value in FORMATS):
            continue
        if key == "pattern" and value == NO_NUL_PATTERN:
            # looser, not wrong: the NUL rule costs API tools dearly (schemathesis spends minutes
            # drawing 64 KiB strings that match it) and the server still refuses NUL with a 400
            continue
        if key == "exclusiveMinimum":  # draft 7's number is OpenAPI 3.0's boolean beside 'minimum'
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key in ("properties",):  # names of fields, not keywords: only their schemas are translated
            out[key] = {name: _to_openapi(schema) for name, schema in value.items()}
            continue
        out[key] = _to_openapi(value)
    return out


_SCOPED_KEYWORDS = {"properties", "additionalProperties", "patternProperties", "items", "additionalItems"}


def _merge_all_of(node: Any) -> Any:
    """``node`` with each ``allOf`` branch folded into its parent where no keyword clashes (same meaning)."""
    if isinstance(node, list):
        return [_merge_all_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _merge_all_of(value) for key, value in node.items()}
    kept = []
    for branch in node.pop("allOf", []):
        if (
            isinstance(branch, dict)
            and not _SCOPED_KEYWORDS & set(branch)  # these read each other: moved, they would mean more
            and all(node.get(key, value) == value for key, value in branch.items() if key != "allOf")
        ):
            kept.extend(branch.pop("allOf", []))
            node.update(branch)
        else:
            kept.append(branch)
    if kept:
        node["allOf"] = kept
    return node


def openapi_submission_schema() -> dict[str, Any]:
    """``components.schemas.Submission`` of the OpenAPI 3.0 document, made from the definition."""
    schema = _merge_all_of(_to_openapi(_inlined()))
    for field_schema in schema["properties"].values():
        field_schema["nullable"] = True  # null = absent (validate_submission drops null fields)
    return schema


def openapi_document(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (the OpenAPI document) with its ``Submission`` schema made from the definition."""
    spec = copy.deepcopy(spec)
    spec.setdefault("components", {}).setdefault("schemas", {})["Submission"] = openapi_submission_schema()
    return spec


def _openapi_text() -> str:
    spec = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return json.dumps(openapi_document(spec), indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------
# TypeScript
# ---------------------------------------------------------------------------

_TS_SCALARS = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean", "null": "null"}


def _ts_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind in _TS_SCALARS:
        return _TS_SCALARS[kind]
    if kind == "array":
        inner = _ts_type(schema.get("items", {}))
        return f"{inner}[]" if inner.isidentifier() else f"Array<{inner}>"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"{{ [key: string]: {_ts_type(values)} }}"
        return "PartialJSONObject"  # any JSON object, as the rest of the extension types it
    return "unknown"


def _limits_in_words(schema: dict[str, Any]) -> str:
    """The limits a field's schema sets, for its doc comment: 'At most 200 characters.'"""
    words = []
    items = schema.get("items", {})
    for where, unit in ((schema, "characters"), (items, "characters each")):
        if "maxLength" in where:
            words.append(f"at most {where['maxLength']} {unit}")
    if "maxItems" in schema:
        words.append(f"at most {schema['maxItems']} items")
    if "minimum" in schema and "maximum" in schema:
        words.append(f"from {schema['minimum']:g} to {schema['maximum']:g}")
    if "exclusiveMinimum" in schema:
        words.append(f"greater than {schema['exclusiveMinimum']:g}")
    return "; ".join(words).capitalize() + "." if words else ""


def _ts_comment(text: str, indent: str) -> list[str]:
    text = text.replace("*/", "*\\/")
    if len(text) + len(indent) <= 72:
        return [f"{indent}/** {text} */"]
    return [f"{indent}/**", *(f"{indent} * {line}" for line in textwrap.wrap(text, 76 - len(indent))), f"{indent} */"]


def typescript_submission() -> str:
    """``labextension/src/generated/submission.ts``: the submission's TypeScript interface."""
    schema = _inlined()
    lines = [
        "/**",
        " * Generated from jupyter_taskrun/schemas/submission.json by",
        " * `python -m jupyter_taskrun.schema ts`: do not edit (tests/test_schema.py checks it).",
        " */",
        "",
        "import type { PartialJSONObject } from '@lumino/coreutils';",
        "",
        *_ts_comment(schema["description"], ""),
        f"export interface I{schema['title']} {{",
    ]
    required = set(schema.get("required", ()))
    for name, field_schema in schema["properties"].items():
        doc = " ".join(filter(None, (field_schema.get("description", ""), _limits_in_words(field_schema))))
        if doc:
            lines += _ts_comment(doc, "  ")
        lines.append(f"  {name}{'' if name in required else '?'}: {_ts_type(field_schema)};")
    lines += ["}", "", "/** The fields of which a submission gives exactly one. */"]
    kinds = [f"'{kind}'" for kind in SOURCE_KINDS]
    one_line = f"export const SUBMISSION_SOURCES = [{', '.join(kinds)}] as const;"
    if len(one_line) <= 80:  # as prettier (80 columns) prints it
        lines += [one_line, ""]
    else:
        lines += ["export const SUBMISSION_SOURCES = [", ",\n".join(f"  {kind}" for kind in kinds), "] as const;", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# python -m jupyter_taskrun.schema
# ---------------------------------------------------------------------------

GENERATED: dict[str, tuple[Path, Callable[[], str]]] = {
    "ts": (TS_PATH, typescript_submission),
    "openapi": (OPENAPI_PATH, _openapi_text),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_taskrun.schema", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", metavar="{ts,openapi}", help="what to write (default: both)")
    parser.add_argument("--check", action="store_true", help="only report files that differ from the definition")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(GENERATED)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    if not (REPO_ROOT / "pyproject.toml").exists():
        parser.error(f"the generated files live in a source checkout, not in {REPO_ROOT}")
    stale = []
    for target in args.targets or GENERATED:
        path, make = GENERATED[target]
        text = make()
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for stale_path in stale:
        print(f"out of date: {stale_path} (run python -m jupyter_taskrun.schema)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
