"""What a run is: its checkpoint identity (``identity``), its folder name (``run_name``), and the ONE list of
the keys that change no number (``NOT_IDENTITY``; reports and claims pool over ``POOLED``).

Run names hash a fixed set of optimizer settings (``NAMED_OPTIMIZER_SETTINGS``), never the catalog's order, so
no optimizer added to the catalog renames a run folder (tests/test_identity.py pins the names).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from jaxres import catalog
from jaxres.config.keys import flatten, to_dict
from jaxres.config.sections import RunConfig

# observe, schedule or save: change no number
NOT_IDENTITY = ("layer_norms_every", "parallel", "checkpoint_every_steps", "checkpoint_every_minutes",
                "compute.keep_memory")
POOLED = ("seed", *NOT_IDENTITY)  # what reports and claims pool runs over: the seed, and the keys above
OPTIMIZER_SETTINGS = ("b1", "b2", "eps", "momentum", "nesterov", "weight_decay")


def identity(cfg: RunConfig) -> dict[str, Any]:
    """What a run is, for its checkpoints: the whole config but the keys that change no number
    (``NOT_IDENTITY``) and the epoch count, so a finished run can be extended (a schedule whose length
    is the run's, cosine without decay_steps, keeps it). The optimizer's settings are the ones it trains
    with (its own defaults filled in); those it does not take are left out."""
    d = to_dict(cfg)
    for key in NOT_IDENTITY:
        head, _, rest = key.partition(".")
        (d[head].pop(rest) if rest else d.pop(head))
    for k in OPTIMIZER_SETTINGS:
        d["optimizer"].pop(k)
    d["optimizer"].update(cfg.optimizer.settings())
    if not cfg.schedule.needs_total_steps:
        d.pop("epochs")
    return d


def differences(saved: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """The dotted keys in which two config dicts (``identity`` or ``to_dict``) differ. A key that one of
    them lacks counts as its default (``RunConfig()``'s identity): a key added to jaxres defaults to what
    jaxres did before it existed, so a run made before the key was added still matches. An optimizer
    setting the asked optimizer does not take is not compared (it changes nothing)."""
    defaults = _resolved(flatten(to_dict(RunConfig())))
    a, b = _resolved(flatten(saved)), _resolved(flatten(asked))
    return sorted(k for k in set(a) | set(b) if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)))


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config dict (``to_dict``) with every key it lacks set to its default, by the rule of
    ``differences``: a key added to jaxres defaults to what jaxres did before it existed. Reports group
    runs on these, so a run saved before a key existed pools with one saved after (same protocol)."""
    def fill(d: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(d)
        for k, v in defaults.items():
            if k not in out:
                out[k] = v
            elif isinstance(v, dict) and isinstance(out[k], Mapping):
                out[k] = fill(out[k], v)
        return out
    return fill(saved, to_dict(RunConfig()))


def _resolved(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat config with the optimizer's settings as it trains with them: unset ones (None, or absent) take
    its own defaults; those it does not take are dropped (a run saved before they were per optimizer has them)."""
    known = catalog.OPTIMIZERS.get(flat.get("optimizer.name", "adam"))
    takes = known.defaults if known is not None else {}
    out = {k: v for k, v in flat.items() if k.removeprefix("optimizer.") not in OPTIMIZER_SETTINGS}
    for k, default in takes.items():
        value = flat.get(f"optimizer.{k}")
        out[f"optimizer.{k}"] = default if value is None else value
    return out


def run_name(cfg: RunConfig) -> str:
    """Short, readable and unique: ``<dataset>_<model>_seed<seed>``, plus a hash of every other setting
    that differs from the defaults (the seed study's), e.g. ``cifar10_resnet20_seed0_5f3a9c1e``."""
    base = _named(RunConfig())
    rest = {k: v for k, v in _named(cfg).items()
            if k not in ("data.name", "model.name", "seed") and (k not in base or base[k] != v)}
    name = f"{catalog.data_label(cfg.data.name, cfg.data.source)}_{cfg.model.name.replace(':', '.')}_seed{cfg.seed}"  # a user's network: package.module:name
    if rest:
        name += "_" + hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]
    return name


# The optimizer settings as one list held them before each optimizer had its own (Adam's b1, b2, eps, SGD's
# momentum and nesterov, no weight decay): run names hash them, fixed here, so that no optimizer added to the
# catalog, in any place, renames a run folder (tests/test_identity.py pins the names of every study preset).
NAMED_OPTIMIZER_SETTINGS = {"optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-8,
                            "optimizer.momentum": 0.9, "optimizer.nesterov": False, "optimizer.weight_decay": 0.0}


def _named(cfg: RunConfig) -> dict[str, Any]:
    """The flat identity run names hash: every setting in NAMED_OPTIMIZER_SETTINGS, the run's own where its
    optimizer takes it, so names stay what they were before each optimizer had its own settings."""
    return NAMED_OPTIMIZER_SETTINGS | flatten(identity(cfg))
