"""Dotted keys (``optimizer.lr``): the list of them, reading and replacing one, and the config as a dict.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from jaxres.config.sections import RunConfig
from jaxres.config.values import ConfigError, Section, parse, section_of

def keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config class, in field order."""
    out = []
    for name in cls.model_fields:
        sub = section_of(cls, name)
        out += keys(sub, f"{prefix}{name}.") if sub is not None else [prefix + name]
    return out


def check_key(key: str) -> None:
    known = keys()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"unknown config key {key!r}; {hint}keys: {', '.join(known)}")


def get(cfg: Any, key: str) -> Any:
    """The value at a dotted ``key``."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_nested(cfg: Section, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if rest:
        value = set_nested(getattr(cfg, head), rest, value)
    elif isinstance(value, str):
        value = parse(value, type(cfg).model_fields[head].annotation)
    return type(cfg)(**{**dict(cfg), head: value})


def replace(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    """A copy of ``cfg`` with ``key`` set to ``value`` (a typed value, or a string to parse); checked."""
    check_key(key)
    return set_nested(cfg, key, value)


def to_dict(cfg: Section) -> dict[str, Any]:
    """The config as nested JSON-able dicts (tuples become lists)."""
    return cfg.model_dump(mode="json")


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """The run config a ``to_dict`` (or ``results.json``'s "config") describes, checked like any other; a key
    jaxres does not have is one ConfigError line, a key it gained since takes its default."""
    return RunConfig(**d)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {prefix + k: v})
    return out
