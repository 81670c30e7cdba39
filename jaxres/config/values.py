"""How a config value is typed, parsed from a command-line string and explained when it is wrong.

Owns ``ConfigError``, the value types of the sections (``Int``, ``Number``, ``Steps``), the ``Section`` base class
(frozen, strict, one ``ConfigError`` line per bad value) and ``parse`` (a ``--set`` string as a typed value).
No JAX, no jaxres import.
"""
from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, Field

class ConfigError(ValueError):
    """A configuration key or value is not acceptable; the message names it and what is allowed."""


# ---------------------------------------------------------------------------- value types
def _whole(v: Any) -> Any:
    """An integral float (JSON's 3.0, 1e4) is the integer it names; anything else is left to the check."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def _listed(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _size(v: Any) -> Any:
    """An image size: 32 (or [32]) is 32 x 32; [h, w] is h x w."""
    v = _whole(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)):
        return tuple(v) * 2 if len(v) == 1 else tuple(v)
    return v


Int = Annotated[int, BeforeValidator(_whole)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Steps = Annotated[tuple[Int, ...], BeforeValidator(_listed)]
Size = Annotated[tuple[Annotated[Int, Field(ge=1)], Annotated[Int, Field(ge=1)]], BeforeValidator(_size)]


class Section(BaseModel):
    """A frozen, strictly typed part of the config (no bool for a number, no string for either; ints widen
    to floats). A bad value is one ``ConfigError`` line naming its dotted key, the value and what is allowed."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=False)
    prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as e:
            raise ConfigError(_explain(type(self), e.errors(include_url=False)[0], values)) from None

    def check(self) -> None:
        """The checks that involve several keys (run when a study is expanded, once every key is set)."""


def _explain(cls: type[Section], error: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """One line for pydantic's first error: the key, the value, and what the field allows."""
    loc = [p for p in error["loc"] if isinstance(p, str)]
    if error["type"] == "value_error":  # a check of ours: its message already names the key
        return str(error["ctx"]["error"])
    key, value = loc[0] if loc else "", values.get(loc[0]) if loc else None
    while len(loc) > 1 and section_of(cls, loc[0]) is not None:  # a nested section given as a dict
        cls, value = section_of(cls, loc[0]), (value or {}).get(loc[1]) if isinstance(value, Mapping) else None
        loc = loc[1:]
        key = loc[0]
    if key not in cls.model_fields:
        if error["type"] == "extra_forbidden":
            return f"{cls.prefix}{key} is not a config key (python -m experiments.compare --list-keys lists them)"
        return f"{cls.prefix}{error['msg']}"
    field = cls.model_fields[key]
    full = f"{cls.prefix}{key}"
    if section_of(cls, key) is not None:
        return f"{full} must be a {field.annotation.__name__}, got {value!r}"
    hint = field.annotation
    choices = _choices(hint)
    if choices and isinstance(value, str):
        either = "true, false or " if _accepts(hint, bool) else ""
        return f"{full}={value!r} is not one of {either}{', '.join(choices)}"
    if error["type"] == "finite_number":
        return f"{full}={value!r} must be a finite number"
    bounds = _bounds(field.metadata)
    if bounds and error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        shown = float(value) if _accepts(hint, float) and isinstance(value, int) else value
        return f"{full}={shown!r} must be {bounds}"
    return f"{full}={value!r} must be {_type_name(hint)}"


def section_of(cls: type, key: str) -> type[Section] | None:
    hint = cls.model_fields[key].annotation if key in getattr(cls, "model_fields", {}) else None
    return hint if isinstance(hint, type) and issubclass(hint, Section) else None


def _bounds(metadata: Sequence[Any]) -> str:
    parts = []
    for m in metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{op} {getattr(m, attr)}")
    return " and ".join(parts)


def _choices(hint: Any) -> tuple[str, ...]:
    """The strings a Literal field (or an optional one) allows; () for any other field."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)


def _strip(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _type_name(hint: Any) -> str:
    names = []
    for arg in map(_strip, _args(hint)):
        if typing.get_origin(arg) is tuple:
            names.append(f"a list of {_type_name(typing.get_args(arg)[0])}s")
        elif typing.get_origin(arg) is Literal:
            names.append(f"one of {', '.join(typing.get_args(arg))}")
        else:
            names.append({int: "an integer", float: "a number", bool: "true or false", str: "a string",
                          type(None): "null"}.get(arg, str(arg)))
    return " or ".join(names)


def _accepts(hint: Any, t: type) -> bool:
    return any(_strip(a) is t for a in _args(hint))


def parse(text: str, hint: Any) -> Any:
    """A command-line string as a value of ``hint``: JSON where it parses (numbers, true, null, lists),
    else the bare string; "none" means null where a string is not allowed, and a comma list is a list."""
    text = text.strip()
    choices = _choices(hint)
    if text.lower() == "null" or (text.lower() == "none" and "none" not in choices):
        return None  # "none" is a value of model.norm and model.shortcut: there only "null" means None
    if choices and (text in choices or not _accepts(hint, bool)):
        return text  # a name: the field says whether it is one of its choices (true/false where it takes those too)
    if text.lower() in ("true", "false", "yes", "no", "on", "off") or (_accepts(hint, bool) and text in ("0", "1")):
        return text.lower() in ("true", "yes", "on", "1")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
        if _accepts(hint, float):
            try:
                value = float(text)  # "nan", "inf": parsed, so the range check can name them
            except ValueError:
                pass
    sequence = next((a for a in map(_strip, _args(hint)) if typing.get_origin(a) is tuple), None)
    if sequence is not None and not isinstance(value, list):
        value = [] if text in ("", "[]") else [parse(t, typing.get_args(sequence)[0]) for t in text.split(",")]
    return value


def names_of(table: Mapping[str, Any] | Sequence[str]) -> Any:
    return Literal[tuple(table)]
