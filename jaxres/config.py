"""Run and study configuration: frozen, typed dataclasses and the named study presets.

A *run* is one ``RunConfig``: everything that decides its numbers (data, model, optimizer,
schedule, epochs, seed). Everything downstream derives from that one object: the checkpoint
identity (``identity``), the run folder (``run_name``), ``results.json`` and the report's columns.

A *study* is a base ``RunConfig`` plus axes, lists of values for any key, expanded into runs by
``Study.runs``. ``STUDIES`` holds the named presets; the protocols ``seed``, ``quick`` and ``tiny``
are studies. Keys are dotted paths (``optimizer.lr``, ``data.batch_size``, ``seed``):
``Study.set`` overrides one for every run and ``Study.sweep`` makes it an axis, both from typed
values or from command-line strings. Every value is checked when a config is made, so bad input
is one ``ConfigError`` line before anything is written (a key's own value when it is set; checks
that involve several keys, such as a batch larger than the data, when the study is expanded). Define a study in Python::

    from jaxres import config
    study = config.get_study("quick").set("optimizer.name", "sgd").sweep("optimizer.lr", [0.1, 0.01])
    for run in study.runs(): print(config.run_name(run))
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxres import data, models

OPTIMIZERS = ("adam", "adamw", "sgd")
PARALLEL = ("jit", "pmap")              # how several devices share a step (jaxres.train.fit)
SCHEDULES = ("constant", "piecewise", "cosine")
DECAY_ON = ("all", "kernels")
PRECISIONS = ("float32", "bfloat16")  # compute.precision: what convolutions, dense layers and activations run in
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """A configuration key or value is not acceptable; the message names it and what is allowed."""


def _choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, choices))}")


def _number(key: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    high_bad = hi is not None and (value >= hi if hi_open else value > hi)
    if low_bad or high_bad:
        fmt = lambda x: str(x) if isinstance(x, int) else f"{x:g}"
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {fmt(lo)}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {fmt(hi)}"
        raise ConfigError(f"{key}={value!r} must be {' and '.join(s for s in (lo_s, hi_s) if s)}")


def _coerce(obj: Any) -> None:
    """Check every field's type (ints where floats are wanted become floats; lists become tuples)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ConfigError(f"{f.name} must be a {hint.__name__}, got {value!r}")
            continue
        try:
            object.__setattr__(obj, f.name, _as_type(value, hint))
        except (TypeError, ValueError):
            raise ConfigError(f"{_prefix(obj)}{f.name}={value!r} must be {_type_name(hint)}") from None


def _prefix(obj: Any) -> str:
    return {DataConfig: "data.", ModelConfig: "model.", OptimizerConfig: "optimizer.",
            ScheduleConfig: "schedule.", ComputeConfig: "compute."}.get(type(obj), "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def _as_type(value: Any, hint: Any) -> Any:
    """``value`` as ``hint``: exact types only (no bool for int, no float for int); ints widen to float."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            try:
                return _as_type(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        return tuple(_as_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        if value is not None:
            raise TypeError(value)
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if type(value) is not hint:
        raise TypeError(value)
    return value


def _parse(text: str, hint: Any) -> Any:
    """A command-line string as a value of ``hint``: JSON where it parses (numbers, true, null, lists),
    else the bare string; "none" means null where a string is not allowed, and a comma list is a list."""
    text = text.strip()
    if text.lower() == "null" or (text.lower() == "none" and not _accepts(hint, str)):
        return None  # "none" is a value of model.norm and model.shortcut: there only "null" means None
    if text.lower() in ("true", "false", "yes", "no", "on", "off"):
        return text.lower() in ("true", "yes", "on")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
        if _accepts(hint, float):
            try:
                value = float(text)  # "nan", "inf": parsed, so the range check can name them
            except ValueError:
                pass
    if typing.get_origin(hint) is tuple and not isinstance(value, list):
        value = [] if text in ("", "[]") else [_parse(t, typing.get_args(hint)[0]) for t in text.split(",")]
    return value


def _accepts(hint: Any, t: type) -> bool:
    return hint is t or t in typing.get_args(hint)


# ---------------------------------------------------------------------------- the run config
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which examples a run sees and how they are batched (``jaxres.data``)."""

    name: str = "mnist"
    batch_size: int = 128               # global, over all devices; the seed does not state one
    eval_batch_size: int = 1000
    preprocess: str = "scale"           # x/255 (the seed's choice) or per-channel standardization
    augment: bool = False               # 4-pixel pad + random crop + horizontal flip
    source: str = "device"              # raw files read with numpy, batched on the device; or "tfds"
    train_subset: int | None = None     # the first N training examples only
    test_subset: int | None = None      # the first N test examples only

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("data.name", self.name, data.DATASETS)
        _choice("data.preprocess", self.preprocess, data.PREPROCESS)
        _choice("data.source", self.source, data.SOURCES)
        info = data.DATASETS[self.name]
        for key, n, size in (("train_subset", self.train_subset, info.num_train),
                             ("test_subset", self.test_subset, info.num_test)):
            if n is not None:
                _number(f"data.{key}", n, 1, size)
        for key in ("batch_size", "eval_batch_size"):
            _number(f"data.{key}", getattr(self, key), 1)

    def check(self) -> None:
        """The checks that involve several keys (run when a study is expanded, once every key is set)."""
        train = self.train_subset or data.DATASETS[self.name].num_train
        if self.batch_size > train:
            raise ConfigError(f"data.batch_size={self.batch_size} is larger than the {train} training examples "
                              f"of {self.name}; lower it or raise data.train_subset")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A preset of ``jaxres.models`` and its knobs; None keeps the preset's own value."""

    name: str = "seed_cnn"
    norm: str | None = None             # None: the preset's own ("none" for the seed networks, "batch"
                                        # for He et al.'s resnet20 ... plain110)
    zero_init_residual: bool = False
    shortcut: str | None = None
    kernel_init: str | None = None

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("model.name", self.name, models.PRESETS)
        if self.norm is not None:
            _choice("model.norm", self.norm, models.NORMS)
        if self.shortcut is not None:
            _choice("model.shortcut", self.shortcut, models.SHORTCUTS)
        if self.kernel_init is not None:
            _choice("model.kernel_init", self.kernel_init, models.KERNEL_INITS)

    def check(self) -> None:
        fields = {f.name for f in dataclasses.fields(models.PRESETS[self.name].func)}
        for key in ("shortcut", "zero_init_residual"):
            if getattr(self, key) not in (None, False) and key not in fields:
                raise ConfigError(f"model.{key} does not apply to {self.name} (it has no residual blocks)")

    def build(self, num_classes: int, precision: str = "float32") -> Any:
        """The Flax module this config describes, computing in ``precision`` (``ComputeConfig.precision``:
        parameters stay float32 either way)."""
        import jax.numpy as jnp

        self.check()
        _choice("compute.precision", precision, PRECISIONS)
        knobs = {"dtype": jnp.dtype(precision), "num_classes": num_classes}
        knobs.update({k: getattr(self, k) for k in ("norm", "shortcut", "kernel_init") if getattr(self, k) is not None})
        if self.zero_init_residual:
            knobs["zero_init_residual"] = True
        return models.get_model(self.name, **knobs)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optax optimizer (``jaxres.optim.make_optimizer``). Defaults: the seed study's Adam."""

    name: str = "adam"
    lr: float = 1e-3                    # peak learning rate (the schedule multiplies it)
    b1: float = 0.9                     # adam, adamw
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9               # sgd; 0 for plain SGD
    nesterov: bool = False              # sgd
    weight_decay: float = 0.0           # adam, sgd: L2 added to the gradient; adamw: decoupled, times lr
    decay_on: str = "all"               # weight decay on every parameter, or on kernels only

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("optimizer.name", self.name, OPTIMIZERS)
        _choice("optimizer.decay_on", self.decay_on, DECAY_ON)
        _number("optimizer.lr", self.lr, 0, lo_open=True)
        for key in ("b1", "b2", "momentum"):
            _number(f"optimizer.{key}", getattr(self, key), 0, 1, hi_open=True)
        _number("optimizer.eps", self.eps, 0, lo_open=True)
        _number("optimizer.weight_decay", self.weight_decay, 0)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How the learning rate moves: lr(step) = optimizer.lr * warm-up factor * schedule factor."""

    name: str = "constant"
    warmup_steps: int = 0               # linear warm-up, factor (step + 1) / warmup_steps
    boundaries: tuple[int, ...] = ()    # piecewise: multiply by `factor` at each of these steps
    factor: float = 0.1
    decay_steps: int | None = None      # cosine: length of the decay; None = the whole run
    final_fraction: float = 0.0         # cosine: the last learning rate as a fraction of the peak

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("schedule.name", self.name, SCHEDULES)
        _number("schedule.warmup_steps", self.warmup_steps, 0)
        _number("schedule.factor", self.factor, 0, lo_open=True)
        _number("schedule.final_fraction", self.final_fraction, 0, 1)
        if self.decay_steps is not None:
            _number("schedule.decay_steps", self.decay_steps, 1)
        if any(b <= 0 for b in self.boundaries) or list(self.boundaries) != sorted(set(self.boundaries)):
            raise ConfigError(f"schedule.boundaries={list(self.boundaries)} must be increasing positive steps")

    def check(self) -> None:
        if self.name == "piecewise" and not self.boundaries:
            raise ConfigError("schedule.name='piecewise' needs schedule.boundaries (e.g. [32000,48000])")

    @property
    def needs_total_steps(self) -> bool:
        return self.name == "cosine" and self.decay_steps is None


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How the arithmetic is done; part of a run's identity, since it changes the numbers.

    ``precision="bfloat16"``: convolutions, dense layers and activations in bfloat16; parameters, optimizer
    state, gradients as applied, the loss, the softmax and normalization statistics in float32 (the
    dtype of every tensor: docs/precision.md). About half the step time on CPUs with AVX-512 BF16.
    """

    precision: str = "float32"

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("compute.precision", self.precision, PRECISIONS)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: what it trains on, what, how, for how long, from which seed."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    compute: ComputeConfig = ComputeConfig()
    epochs: int = 10
    seed: int = 0                       # the root of every random stream (jaxres.train.Streams)
    # Per-layer gradient, parameter and update norms every N steps (0: off); observes, changes no
    # result, so it is not part of a run's identity. Every 10th step costs under 1% of a step.
    layer_norms_every: int = 10
    # How several devices share a step: "jit" (one program over a device mesh of every process; the
    # only path across processes) or "pmap" (one process). Both give the same numbers (tested), so it is
    # not part of a run's identity either; jit is the default: on one host it is as fast or faster.
    parallel: str = "jit"

    def __post_init__(self) -> None:
        _coerce(self)
        _choice("parallel", self.parallel, PARALLEL)
        _number("epochs", self.epochs, 1)
        _number("seed", self.seed, 0, MAX_SEED)
        _number("layer_norms_every", self.layer_norms_every, 0)

    def check(self) -> RunConfig:
        """Every check that involves several keys; returns the config. Each key's own value is checked
        when it is set; these wait until the whole config is (``Study.runs`` calls this)."""
        for part in (self.data, self.model, self.schedule):
            part.check()
        return self

    def build_model(self, num_classes: int) -> Any:
        """The Flax module of ``model``, computing in ``compute.precision``."""
        return self.model.build(num_classes, self.compute.precision)


# ---------------------------------------------------------------------------- keys, values, identity
def keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config class, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        out += keys(hint, f"{prefix}{f.name}.") if dataclasses.is_dataclass(hint) else [prefix + f.name]
    return out


def _check_key(key: str) -> None:
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


def _replace_nested(cfg: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if rest:
        return dataclasses.replace(cfg, **{head: _replace_nested(getattr(cfg, head), rest, value)})
    hint = _hints(type(cfg))[head]
    if isinstance(value, str) and hint is not str:
        value = _parse(value, hint)
    return dataclasses.replace(cfg, **{head: value})


def replace(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    """A copy of ``cfg`` with ``key`` set to ``value`` (a typed value, or a string to parse); checked."""
    _check_key(key)
    return _replace_nested(cfg, key, value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as nested JSON-able dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {prefix + k: v})
    return out


def identity(cfg: RunConfig) -> dict[str, Any]:
    """What a run is, for its checkpoints: the whole config but the epoch count, so a finished run can
    be extended; a schedule whose length is the run's (cosine without decay_steps) keeps it."""
    d = to_dict(cfg)
    d.pop("layer_norms_every")  # what is recorded, not what is trained
    d.pop("parallel")           # how the devices share a step, not what is trained
    if not cfg.schedule.needs_total_steps:
        d.pop("epochs")
    return d


def differences(saved: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """The dotted keys in which two config dicts (``identity`` or ``to_dict``) differ. A key that one of
    them lacks counts as its default (``RunConfig()``'s): a key added to jaxres defaults to what jaxres did
    before it existed, so a run made before the key was added still matches."""
    defaults = flatten(to_dict(RunConfig()))
    a, b = flatten(saved), flatten(asked)
    return sorted(k for k in set(a) | set(b) if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)))


def run_name(cfg: RunConfig) -> str:
    """Short, readable and unique: ``<dataset>_<model>_seed<seed>``, plus a hash of every other setting
    that differs from the defaults (the seed study's), e.g. ``cifar10_resnet20_seed0_5f3a9c1e``."""
    base = flatten(identity(RunConfig()))
    rest = {k: v for k, v in flatten(identity(cfg)).items()
            if k not in ("data.name", "model.name", "seed") and (k not in base or base[k] != v)}
    name = f"{cfg.data.name}_{cfg.model.name}_seed{cfg.seed}"
    if rest:
        name += "_" + hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]
    return name


# ---------------------------------------------------------------------------- studies
@dataclasses.dataclass(frozen=True)
class Study:
    """A base config plus axes; ``runs()`` is every combination of the axes' values.

    An axis is ``(key, values)``, or ``((key1, key2, ...), rows)`` for keys that move together (a
    *tied* axis: each row sets every key, e.g. each optimizer with its own learning rate).
    ``epochs_by_dataset`` gives each dataset its epoch count (a protocol's choice); setting or
    sweeping ``epochs`` replaces it for every dataset.
    """

    name: str
    description: str
    base: RunConfig = RunConfig()
    axes: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
    epochs_by_dataset: tuple[tuple[str, int], ...] | None = None

    def _without(self, key: str) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
        """The axes with ``key`` taken out (from a tied axis too: its other keys stay tied)."""
        out = []
        for k, values in self.axes:
            if isinstance(k, tuple) and key in k:
                i = k.index(key)
                k = k[:i] + k[i + 1:]
                values = tuple(dict.fromkeys(v[:i] + v[i + 1:] for v in values))
                if len(k) == 1:
                    k, values = k[0], tuple(dict.fromkeys(v[0] for v in values))
            if k != key:
                out.append((k, values))
        return tuple(out)

    def set(self, key: str, value: Any) -> Study:
        """Every run gets ``key`` = ``value`` (an axis on that key is dropped)."""
        _check_key(key)
        epochs = None if key == "epochs" else self.epochs_by_dataset
        return dataclasses.replace(self, base=_replace_nested(self.base, key, value), axes=self._without(key),
                                   epochs_by_dataset=epochs)

    def sweep(self, key: str, values: Sequence[Any] | str) -> Study:
        """``key`` becomes an axis over ``values`` (a list, or a command-line string "a,b,c" / "[a, b]").
        A comma-separated ``key`` ("optimizer.name,optimizer.lr") makes a tied axis: ``values`` are rows,
        one value per key (a list of lists, or the string "adam,0.001;sgd,0.1" or JSON)."""
        if "," in key:
            return self.sweep_tied(tuple(k.strip() for k in key.split(",")), values)
        _check_key(key)
        if isinstance(values, str):
            text = values.strip()
            values = json.loads(text) if text.startswith("[") and _is_json(text) else text.split(",")
            values = [v.strip() if isinstance(v, str) else v for v in values]
        # each value parsed and checked now, so a bad one is one line before anything runs
        values = tuple(dict.fromkeys(_freeze(get(_replace_nested(self.base, key, v), key)) for v in values))
        if not values:
            raise ConfigError(f"no values given for {key}")
        epochs = None if key == "epochs" else self.epochs_by_dataset
        return dataclasses.replace(self, axes=self._without(key) + ((key, values),), epochs_by_dataset=epochs)

    def sweep_tied(self, keys_: Sequence[str], rows: Sequence[Sequence[Any]] | str) -> Study:
        """One axis over several keys that move together: each row gives one value per key."""
        keys_ = tuple(keys_)
        if len(set(keys_)) != len(keys_) or len(keys_) < 2:
            raise ConfigError(f"a tied axis needs two or more different keys, got {', '.join(keys_)}")
        for k in keys_:
            _check_key(k)
        if isinstance(rows, str):
            text = rows.strip()
            rows = (json.loads(text) if text.startswith("[") and _is_json(text)
                    else [[v.strip() for v in row.split(",")] for row in text.split(";") if row.strip()])
        typed = []
        for row in rows:
            if len(row) != len(keys_):
                raise ConfigError(f"the row {list(row)!r} has {len(row)} values for the {len(keys_)} keys "
                                  f"{', '.join(keys_)}")
            typed.append(tuple(_freeze(get(_replace_nested(self.base, k, v), k)) for k, v in zip(keys_, row)))
        rows = tuple(dict.fromkeys(typed))
        if not rows:
            raise ConfigError(f"no rows given for {', '.join(keys_)}")
        study = self
        for k in keys_:
            study = dataclasses.replace(study, axes=study._without(k))
        epochs = None if "epochs" in keys_ else self.epochs_by_dataset
        return dataclasses.replace(study, axes=study.axes + ((keys_, rows),), epochs_by_dataset=epochs)

    def axis_keys(self) -> dict[str, Any]:
        """Every key that an axis moves -> its values (a tied key's values in row order)."""
        out: dict[str, Any] = {}
        for k, values in self.axes:
            if isinstance(k, tuple):
                out.update({key: [row[i] for row in values] for i, key in enumerate(k)})
            else:
                out[k] = list(values)
        return out

    def runs(self) -> list[RunConfig]:
        """Every run of the study, checked, without duplicates, in axis order."""
        keys_, values = [k for k, _ in self.axes], [v for _, v in self.axes]
        out: dict[str, RunConfig] = {}
        for combo in itertools.product(*values):
            cfg = self.base
            for k, v in zip(keys_, combo):
                for key, value in (zip(k, v) if isinstance(k, tuple) else ((k, v),)):
                    cfg = _replace_nested(cfg, key, value)
            if self.epochs_by_dataset is not None:
                table = dict(self.epochs_by_dataset)
                if cfg.data.name not in table:
                    raise ConfigError(f"study {self.name!r} sets no epochs for {cfg.data.name} (it has "
                                      f"{', '.join(table)}); give them with --set epochs=N")
                cfg = dataclasses.replace(cfg, epochs=table[cfg.data.name])
            out.setdefault(run_name(cfg), cfg.check())
        return list(out.values())


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


SEED_MODELS = ("seed_cnn", "seed_resnet", "seed_plain_twin")
SEED_DATASETS = ("mnist", "cifar10")


def _seed_protocol(name: str, description: str, epochs: dict[str, int], train_subset: int | None = None,
                   test_subset: int | None = None, seeds: tuple[int, ...] = (0,),
                   compute: ComputeConfig = ComputeConfig()) -> Study:
    base = RunConfig(data=DataConfig(train_subset=train_subset, test_subset=test_subset), compute=compute)
    return Study(name=name, description=description, base=base,
                 axes=(("data.name", SEED_DATASETS), ("model.name", SEED_MODELS), ("seed", seeds)),
                 epochs_by_dataset=tuple(epochs.items()))


HE_DEPTHS = (20, 32, 44, 56, 110)


def _depth_protocol(name: str, description: str, depths: Sequence[int], epochs: int, boundaries: tuple[int, int],
                    train_subset: int | None = None, test_subset: int | None = None,
                    seeds: tuple[int, ...] = (0, 1, 2)) -> Study:
    """He et al. (2015), section 4.2: plain and residual CIFAR-10 networks of several depths, batch norm,
    SGD momentum 0.9, lr 0.1 divided by 10 at two boundaries, weight decay 1e-4 (on every parameter, as
    Caffe / fb.resnet.torch do), 4-pixel pad + crop + flip, per-channel standardization, batch 128."""
    base = RunConfig(data=DataConfig(name="cifar10", preprocess="standardize", augment=True,
                                     train_subset=train_subset, test_subset=test_subset),
                     optimizer=OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                     schedule=ScheduleConfig(name="piecewise", boundaries=boundaries, factor=0.1), epochs=epochs)
    names = tuple(f"{kind}{d}" for kind in ("plain", "resnet") for d in depths)
    return Study(name=name, description=description, base=base, axes=(("model.name", names), ("seed", seeds)))


# One optimizer per row, each with its own learning rate (a tied axis): Adam as the seed study; AdamW with
# PyTorch's default decoupled decay 0.01; SGD with momentum 0.9 at Keras's default 0.01.
NORM_OPT_OPTIMIZERS = (("adam", 1e-3, 0.0), ("adamw", 1e-3, 0.01), ("sgd", 0.01, 0.0))

STUDIES: dict[str, Study] = {
    "seed": _seed_protocol(
        "seed", "the seed study as we read it: full splits, 30 MNIST / 100 CIFAR-10 epochs, batch 128, "
        "Adam 1e-3, no normalization, no augmentation; seeds 0, 1, 2 (a comparison: the report's intervals "
        "need several)", {"mnist": 30, "cifar10": 100}, seeds=(0, 1, 2)),
    "seed_cpu": _seed_protocol(
        "seed_cpu", "the seed study at full data within a 2-core CPU's reach: full splits, 10 MNIST / 30 CIFAR-10 "
        "epochs (extend with --epochs), bfloat16 compute, otherwise as seed; seeds 0, 1, 2",
        {"mnist": 10, "cifar10": 30}, seeds=(0, 1, 2), compute=ComputeConfig(precision="bfloat16")),
    "quick": _seed_protocol(
        "quick", "the seed study reduced for a 2-core CPU: the first 3,072 training and 2,000 test examples, "
        "3 epochs, seed 0 (a smoke-scale run, not a comparison)", {"mnist": 3, "cifar10": 3}, 3072, 2000),
    "tiny": _seed_protocol(
        "tiny", "seconds per run, for tests: 256 training and 200 test examples, 1 epoch",
        {"mnist": 1, "cifar10": 1}, 256, 200),
    "depth": _depth_protocol(
        "depth", "He et al. 2015's CIFAR-10 degradation experiment (their Fig. 6, Table 6): plain and resnet at "
        "depths 20, 32, 44, 56, 110, batch norm, SGD momentum 0.9, lr 0.1 /10 at 32k and 48k steps, weight decay "
        "1e-4, pad-crop-flip, per-channel standardization, batch 128, 164 epochs of 390 steps (63,960 of their "
        "64k iterations); seeds 0, 1, 2. A GPU job: experiments/gpu_depth.sh", HE_DEPTHS, 164, (32000, 48000)),
    "depth_cpu": _depth_protocol(
        "depth_cpu", "the depth study reduced to about an hour on a 2-core CPU: depths 20, 32, 56, the first "
        "12,800 training images (100 steps per epoch) and 2,000 test images, 10 epochs = 1,000 steps, the "
        "schedule scaled with it (lr /10 at 500 and 750, as 32k and 48k of 64k); seed 0",
        (20, 32, 56), 10, (500, 750), 12800, 2000, seeds=(0,)),
    "norm_opt": Study(
        "norm_opt", "normalization x optimizer on the seed networks at the quick scale (3,072 / 2,000 CIFAR-10 "
        "images, 3 epochs): norm none, batch, group, layer; adam 1e-3, adamw 1e-3 (decay 0.01), sgd 0.01 "
        "(momentum 0.9); seed_cnn, seed_resnet, seed_plain_twin; seeds 0, 1, 2",
        RunConfig(data=DataConfig(name="cifar10", train_subset=3072, test_subset=2000), epochs=3),
        axes=(("model.norm", ("none", "batch", "group", "layer")),
              (("optimizer.name", "optimizer.lr", "optimizer.weight_decay"), NORM_OPT_OPTIMIZERS),
              ("model.name", SEED_MODELS), ("seed", (0, 1, 2)))),
}


def get_study(name: str) -> Study:
    """The named study preset."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
