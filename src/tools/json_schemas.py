"""The JSON schemas of tools and structured outputs: checked when an agent is saved (or an MCP
server offers a tool), and validated against without ever fetching anything or backtracking.

- A `$ref` (or `$dynamicRef`) must point inside its schema (`#...`). Validators get an empty
  `referencing` registry, which retrieves nothing, so even a schema stored before that rule
  never reads a file or a URL: its reference just does not resolve.
- `pattern` and `patternProperties` run on RE2, whose matching time is linear in the text; a
  pattern RE2 cannot compile (lookarounds, backreferences) is refused.
- Messages name the place in the schema and the rule broken, never the schema's content.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.exceptions import Unresolvable

REF_KEYWORDS = ("$ref", "$dynamicRef")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print the failing pattern to stderr
_RE2_OPTIONS.max_mem = 1 << 20  # per pattern; a tool's patterns are small
_MAX_WHERE_CHARS = 200


class SchemaRefused(ValueError):
    """A schema Parley will not use; the message says where and why, never what it holds."""


def schema_bytes(value: Any) -> int:
    """The size of a JSON value as compact UTF-8 JSON, what the size limits count."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a schema that is not valid JSON Schema (2020-12), refers outside itself, or has
    a pattern RE2 cannot compile. Raises SchemaRefused."""
    error = best_match(_METASCHEMA.iter_errors(schema))
    if error is not None:
        raise SchemaRefused(f"{_where(error.absolute_path)}: {_rule_broken(error)}")
    for path in _outside_references(schema, ()):
        raise SchemaRefused(
            f"{_where(path)}: must point inside the schema (start with #); "
            "references to files or URLs are not allowed"
        )
    _check_supported(schema)


def schema_problem(schema: dict[str, Any], max_bytes: int) -> str | None:
    """Why a schema an MCP server offers cannot be used, or None when it can."""
    size = schema_bytes(schema)
    if size > max_bytes:
        return f"its input schema has {size:,} bytes; the limit is {max_bytes:,}"
    try:
        check_schema(schema)
    except SchemaRefused as refused:
        return f"its input schema is refused at {refused}"
    return None


def validation_errors(schema: dict[str, Any], instance: Any) -> list[ValidationError]:
    """Where `instance` breaks `schema`, sorted. The errors quote the instance (for the model's
    eyes only). Raises SchemaRefused when the schema itself cannot be used: a reference that
    does not resolve inside it, a pattern RE2 cannot compile."""
    try:
        _check_supported(schema)
        return sorted(_SafeValidator(schema, registry=Registry()).iter_errors(instance), key=str)
    except Unresolvable:
        raise SchemaRefused("it has a $ref that does not resolve inside the schema") from None
    except re2.error as error:
        raise SchemaRefused(
            f"it has a pattern RE2 cannot compile ({_re2_problem(error)})"
        ) from None


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_problem(error: Exception) -> str:
    text = error.args[0] if error.args else b""
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    # RE2 says "<kind>: <the offending part of the pattern>"; only the kind is kept.
    return text.split(":", 1)[0].strip() or "not accepted"


_SCHEMA_FORMATS = FormatChecker()


@_SCHEMA_FORMATS.checks("regex", raises=re2.error)
def _is_re2_pattern(instance: object) -> bool:
    if isinstance(instance, str):
        _compiled(instance)
    return True


# The metaschema marks `pattern` and `patternProperties`' keys as `format: regex`: checked here
# with RE2 instead of Python's `re`.
_METASCHEMA = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=_SCHEMA_FORMATS, registry=Registry()
)


def _rule_broken(error: ValidationError) -> str:
    if error.validator == "format" and error.validator_value == "regex":
        why = _re2_problem(error.cause) if error.cause is not None else "not accepted"
        return (
            f"not a regular expression RE2 accepts ({why}); lookarounds, backreferences and "
            "possessive quantifiers are not supported"
        )
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    if error.validator == "enum":
        return f"must be one of {error.validator_value}"
    if error.validator in ("anyOf", "oneOf"):
        return "has none of the forms JSON Schema allows here"
    return f"breaks the JSON Schema rule `{error.validator}`"


def _where(path: Iterable[Any]) -> str:
    where = "/".join(str(part) for part in path) or "(root)"
    return where if len(where) <= _MAX_WHERE_CHARS else where[:_MAX_WHERE_CHARS] + "..."


def _outside_references(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    # Every `$ref` string anywhere counts, even inside `const` or `default`: a false alarm
    # there is rare, and a reference missed would only be caught later, at validation.
    if isinstance(node, dict):
        for key, value in node.items():
            if key in REF_KEYWORDS and isinstance(value, str):
                if not value.startswith("#"):
                    yield (*path, key)
            else:
                yield from _outside_references(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _outside_references(item, (*path, index))


def _uses_keyword(node: Any, keyword: str) -> bool:
    if isinstance(node, dict):
        return keyword in node or any(_uses_keyword(value, keyword) for value in node.values())
    if isinstance(node, list):
        return any(_uses_keyword(item, keyword) for item in node)
    return False


def _check_supported(schema: dict[str, Any]) -> None:
    # jsonschema matches patternProperties for unevaluatedProperties with Python's `re`,
    # out of reach of the RE2 keywords below.
    if _uses_keyword(schema, "unevaluatedProperties") and _uses_keyword(
        schema, "patternProperties"
    ):
        raise SchemaRefused(
            "(root): unevaluatedProperties and patternProperties cannot be used together "
            "in one schema"
        )


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_compiled(pattern) for pattern in schema.get("patternProperties", {})]
    extras = sorted(
        (
            key
            for key in instance
            if key not in properties and not any(p.search(key) for p in patterns)
        ),
        key=str,
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        verb = "was" if len(extras) == 1 else "were"
        listed = ", ".join(repr(extra) for extra in extras)
        yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


# Draft 2020-12 with every keyword that matches a regular expression on RE2.
_SafeValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)
