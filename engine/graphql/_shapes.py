"""Bringing a resolver's value to its declared type before GraphQL coerces it.

Scripts written for the original engine return JSON *text* for objects and lists
(``return JSON.stringify(rows)``), because the original typed almost everything as a string.
Here fields have real types, so a value is adjusted once, before Tartiflette's own coercion:

* text where an object, interface, union or list is declared is parsed as JSON (text that is
  not JSON is an error naming the type, not a confusing coercion failure later);
* text where an ``Int``, ``Float``, ``Boolean`` or enum is declared is parsed as JSON when it
  is JSON (``"5"``, ``"true"``) and otherwise left for the coercion to judge;
* an object or list where a ``String`` is declared becomes its JSON text, as JavaScript's
  ``JSON.stringify`` would have made it; whole floats print as integers, as in JavaScript;
* ``ID``, ``Date``/``DateTime``/``Time`` and custom scalars are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.graphql._sdl import FieldShape, Kind

_TEXT_TYPES = frozenset(("ID", "Date", "DateTime", "Time"))
_COMPOSITE: frozenset[str] = frozenset(("type", "interface", "union"))


class ShapeError(Exception):
    """A value that cannot be brought to its declared type; the message is for the client."""


def shape_value(value: Any, shape: FieldShape, kinds: Mapping[str, Kind]) -> Any:
    kind = kinds.get(shape.type_name)
    if isinstance(value, str):
        if shape.is_list or kind in _COMPOSITE:
            return _parse_json(value, shape)
        if shape.type_name == "String" or shape.type_name in _TEXT_TYPES or kind == "scalar":
            return value
        try:  # Int, Float, Boolean, enums
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    if shape.type_name != "String":
        return value
    if shape.is_list:
        return [_as_text(item) for item in value] if isinstance(value, list) else value
    return _as_text(value)


def _as_text(value: Any) -> Any:
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):
            return value  # not JSON data: leave it to the String coercion
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _parse_json(text: str, shape: FieldShape) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        expected = f"a list of {shape.type_name}" if shape.is_list else shape.type_name
        raise ShapeError(
            f"the resolver returned text that is not JSON where {expected} was expected"
        ) from None
