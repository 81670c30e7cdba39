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
import hashlib
import itertools
import json
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, Field

from jaxres import catalog

OPTIMIZERS = tuple(catalog.OPTIMIZERS)
SCHEDULES = tuple(catalog.SCHEDULES)
PARALLEL = ("jit", "pmap")              # how several devices share a step (jaxres.train.fit)
DECAY_ON = ("all", "kernels")
PRECISIONS = ("float32", "bfloat16")    # compute.precision: what convolutions, dense layers and activations run in
CONV_BACKENDS = ("auto", "onednn", "xla-swapped", "xla", "winograd")  # compute.conv (jaxres.conv)
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """A configuration key or value is not acceptable; the message names it and what is allowed."""


# ---------------------------------------------------------------------------- value types
def _whole(v: Any) -> Any:
    """An integral float (JSON's 3.0, 1e4) is the integer it names; anything else is left to the check."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def _listed(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


Int = Annotated[int, BeforeValidator(_whole)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Steps = Annotated[tuple[Int, ...], BeforeValidator(_listed)]


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
    while len(loc) > 1 and _section(cls, loc[0]) is not None:  # a nested section given as a dict
        cls, value = _section(cls, loc[0]), (value or {}).get(loc[1]) if isinstance(value, Mapping) else None
        loc = loc[1:]
        key = loc[0]
    if key not in cls.model_fields:
        if error["type"] == "extra_forbidden":
            return f"{cls.prefix}{key} is not a config key (python -m experiments.compare --list-keys lists them)"
        return f"{cls.prefix}{error['msg']}"
    field = cls.model_fields[key]
    full = f"{cls.prefix}{key}"
    if _section(cls, key) is not None:
        return f"{full} must be a {field.annotation.__name__}, got {value!r}"
    hint = field.annotation
    choices = _choices(hint)
    if choices and isinstance(value, str):
        return f"{full}={value!r} is not one of {', '.join(choices)}"
    if error["type"] == "finite_number":
        return f"{full}={value!r} must be a finite number"
    bounds = _bounds(field.metadata)
    if bounds and error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        shown = float(value) if _accepts(hint, float) and isinstance(value, int) else value
        return f"{full}={shown!r} must be {bounds}"
    return f"{full}={value!r} must be {_type_name(hint)}"


def _section(cls: type, key: str) -> type[Section] | None:
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


def _parse(text: str, hint: Any) -> Any:
    """A command-line string as a value of ``hint``: JSON where it parses (numbers, true, null, lists),
    else the bare string; "none" means null where a string is not allowed, and a comma list is a list."""
    text = text.strip()
    choices = _choices(hint)
    if text.lower() == "null" or (text.lower() == "none" and "none" not in choices):
        return None  # "none" is a value of model.norm and model.shortcut: there only "null" means None
    if choices:
        return text  # a name: the field says whether it is one of its choices
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
        value = [] if text in ("", "[]") else [_parse(t, typing.get_args(sequence)[0]) for t in text.split(",")]
    return value


def _names(table: Mapping[str, Any] | Sequence[str]) -> Any:
    return Literal[tuple(table)]


# ---------------------------------------------------------------------------- the run config
class DataConfig(Section):
    """Which examples a run sees and how they are batched (``jaxres.data``)."""

    prefix: ClassVar[str] = "data."
    name: _names(catalog.DATASETS) = "mnist"
    batch_size: Int = Field(128, ge=1)  # global, over all devices; the seed does not state one
    eval_batch_size: Int = Field(1000, ge=1)
    preprocess: _names(catalog.PREPROCESS) = "scale"  # x/255 (the seed's choice) or per-channel standardization
    augment: bool = False               # 4-pixel pad + random crop + horizontal flip
    source: _names(catalog.SOURCES) = "device"  # raw files read with numpy, batched on the device; or "tfds"
    train_subset: Int | None = None     # the first N training examples only
    test_subset: Int | None = None      # the first N test examples only
    # The last N of the (first train_subset) training examples held out as a validation split (0: none, the seed
    # protocol): evaluated every epoch, it chooses the best epoch and drives early stopping (``patience``), so the
    # test split is not used to choose anything.
    validation: Int = Field(0, ge=0)

    @pydantic.model_validator(mode="after")
    def _subsets(self) -> DataConfig:
        info = catalog.DATASETS[self.name]
        for key, n, size in (("train_subset", self.train_subset, info.num_train),
                             ("test_subset", self.test_subset, info.num_test)):
            if n is not None and not 1 <= n <= size:
                raise ConfigError(f"data.{key}={n!r} must be >= 1 and <= {size}")
        return self

    def check(self) -> None:
        train = (self.train_subset or catalog.DATASETS[self.name].num_train) - self.validation
        if train < 1:
            raise ConfigError(f"data.validation={self.validation} holds out every training example of {self.name} "
                              f"(there are {train + self.validation}); hold out fewer")
        if self.batch_size > train:
            held = f" ({self.validation} held out for validation)" if self.validation else ""
            raise ConfigError(f"data.batch_size={self.batch_size} is larger than the {train} training examples "
                              f"of {self.name}{held}; lower it or raise data.train_subset")


class ModelConfig(Section):
    """A preset of ``jaxres.models`` (``jaxres.catalog.PRESETS``) and its knobs; None keeps the preset's own."""

    prefix: ClassVar[str] = "model."
    name: _names(catalog.PRESETS) = "seed_cnn"
    norm: _names(catalog.NORMS) | None = None  # None: the preset's own ("none" for the seed networks,
                                                 # "batch" for He et al.'s resnet20 ... plain110)
    zero_init_residual: bool = False
    shortcut: _names(catalog.SHORTCUTS) | None = None
    kernel_init: _names(catalog.KERNEL_INITS) | None = None

    def check(self) -> None:
        preset = catalog.PRESETS[self.name]
        for key in ("shortcut", "zero_init_residual"):
            if getattr(self, key) not in (None, False) and preset.module != "ResNet":
                raise ConfigError(f"model.{key} does not apply to {self.name} (it has no residual blocks)")


class OptimizerConfig(Section):
    """The optax optimizer (``jaxres.optim.make_optimizer``). Defaults: the seed study's Adam. A setting left
    None takes the optimizer's own default (``jaxres.catalog.OPTIMIZERS``: Adam's betas 0.9/0.999, SGD's
    momentum 0.9, ...); one the optimizer does not take cannot be set (``check``)."""

    prefix: ClassVar[str] = "optimizer."
    name: _names(catalog.OPTIMIZERS) = "adam"
    lr: Number = Field(1e-3, gt=0)      # peak learning rate (the schedule multiplies it)
    b1: Number | None = Field(None, ge=0, lt=1)    # adam, adamw
    b2: Number | None = Field(None, ge=0, lt=1)
    eps: Number | None = Field(None, gt=0)
    momentum: Number | None = Field(None, ge=0, lt=1)  # sgd; 0 for plain SGD
    nesterov: bool | None = None        # sgd
    weight_decay: Number | None = Field(None, ge=0)  # adam, sgd: L2 added to the gradient; adamw: decoupled, times lr
    decay_on: Literal[DECAY_ON] = "all"  # weight decay on every parameter, or on kernels only

    def check(self) -> None:
        takes = catalog.OPTIMIZERS[self.name].defaults
        for key in ("b1", "b2", "eps", "momentum", "nesterov", "weight_decay"):
            if getattr(self, key) is not None and key not in takes:
                raise ConfigError(f"optimizer.{key} does not apply to {self.name} (it takes {', '.join(takes)})")

    def settings(self) -> dict[str, Any]:
        """The settings this optimizer trains with: its own defaults, updated by every key that was set."""
        own = catalog.OPTIMIZERS[self.name].defaults
        return {k: own[k] if getattr(self, k) is None else getattr(self, k) for k in own}


class ScheduleConfig(Section):
    """How the learning rate moves: lr(step) = optimizer.lr * warm-up factor * schedule factor."""

    prefix: ClassVar[str] = "schedule."
    name: _names(catalog.SCHEDULES) = "constant"
    warmup_steps: Int = Field(0, ge=0)  # linear warm-up, factor (step + 1) / warmup_steps
    boundaries: Steps = ()              # piecewise: multiply by `factor` at each of these steps
    factor: Number = Field(0.1, gt=0)
    decay_steps: Int | None = Field(None, ge=1)  # cosine: length of the decay; None = the whole run
    final_fraction: Number = Field(0.0, ge=0, le=1)  # cosine: the last learning rate as a fraction of the peak

    @pydantic.field_validator("boundaries")
    @classmethod
    def _increasing(cls, b: tuple[int, ...]) -> tuple[int, ...]:
        if any(x <= 0 for x in b) or list(b) != sorted(set(b)):
            raise ConfigError(f"schedule.boundaries={list(b)} must be increasing positive steps")
        return b

    def check(self) -> None:
        if self.name == "piecewise" and not self.boundaries:
            raise ConfigError("schedule.name='piecewise' needs schedule.boundaries (e.g. [32000,48000])")

    @property
    def needs_total_steps(self) -> bool:
        return self.name == "cosine" and self.decay_steps is None


class ComputeConfig(Section):
    """How the arithmetic is done (``jaxres.conv``, ``jaxres.norms``, ``jaxres.cpu``; docs/precision.md,
    docs/cpu.md). Every key but ``keep_memory`` can change a run's last digits, so they are part of its
    identity: a run resumes only under the values it started with. Environment variables override them
    (``COMPUTE_ENV``, read by ``from_env``); each run's header and ``results.json`` give the values in effect.

    ``precision="bfloat16"``: convolutions, dense layers and activations in bfloat16; parameters, optimizer
    state, gradients as applied, the loss, the softmax and normalization statistics in float32 (the
    dtype of every tensor: docs/precision.md). About half the step time on CPUs with AVX-512 BF16.
    """

    prefix: ClassVar[str] = "compute."
    precision: Literal[PRECISIONS] = "float32"
    conv: Literal[CONV_BACKENDS] = "auto"   # auto: onednn on CPU where it loaded, else xla-swapped; xla off the CPU
    fuse_add: bool = True               # oneDNN adds a residual block's shortcut before the ReLU (else XLA does)
    overlap_grads: bool = True          # oneDNN computes input and kernel gradients in one call (at once on 2 threads)
    onednn_norm: bool = True            # batch norm through oneDNN where the convolutions are
    fast_path: bool = True              # CPU: XLA's convolutions away from YNNPACK (an XLA flag); off: conv=auto means xla
    keep_memory: bool = True            # CPU: glibc keeps freed memory (speed only: not part of the identity)


# compute key -> the environment variable that overrides it (read in one place: ``from_env``)
COMPUTE_ENV = {"precision": "JAXRES_PRECISION", "conv": "JAXRES_CONV", "fuse_add": "JAXRES_CONV_FUSE_ADD",
               "overlap_grads": "JAXRES_CONV_OVERLAP_GRADS", "onednn_norm": "JAXRES_ONEDNN_NORM",
               "fast_path": "JAXRES_CPU_FAST_PATH", "keep_memory": "JAXRES_KEEP_MEMORY"}


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"compute.<key>": text}`` for every COMPUTE_ENV variable that is set (and not empty)."""
    environ = os.environ if environ is None else environ
    return {f"compute.{k}": environ[v].strip() for k, v in COMPUTE_ENV.items() if environ.get(v, "").strip()}


def from_env(compute: ComputeConfig | None = None, environ: Mapping[str, str] | None = None) -> ComputeConfig:
    """``compute`` (default: the defaults) with the environment's overrides applied, each parsed like a
    ``--set`` value (``0``/``false``/``no``/``off``, ``1``/``true``/``yes``/``on``); a bad value is one
    ConfigError line naming the variable."""
    compute = compute or ComputeConfig()
    for key, text in env_overrides(environ).items():
        try:
            compute = _replace_nested(compute, key.partition(".")[2], text)
        except ConfigError as e:
            raise ConfigError(f"${COMPUTE_ENV[key.partition('.')[2]]}: {e}") from None
    return compute


def with_env(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the environment's overrides of its compute settings (``from_env``)."""
    compute = from_env(cfg.compute)
    return cfg if compute == cfg.compute else RunConfig(**{**dict(cfg), "compute": compute})


class RunConfig(Section):
    """One run: what it trains on, what, how, for how long, from which seed."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    compute: ComputeConfig = ComputeConfig()
    epochs: Int = Field(10, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)  # the root of every random stream (jaxres.train.Streams)
    # Per-layer gradient, parameter and update norms every N steps (0: off); observes, changes no
    # result, so it is not part of a run's identity. Every 10th step costs under 1% of a step.
    layer_norms_every: Int = Field(10, ge=0)
    # How several devices share a step: "jit" (one program over a device mesh of every process; the
    # only path across processes) or "pmap" (one process). Both give the same numbers (tested), so it is
    # not part of a run's identity either; jit is the default: on one host it is as fast or faster.
    parallel: Literal[PARALLEL] = "jit"
    # Checkpoints inside an epoch (besides the one at its end): after every N steps and/or every M minutes
    # (0: never), and always when a stop signal arrives (SIGTERM, SIGUSR1, Ctrl-C). A resume continues at the
    # next step, bitwise as if never stopped; only the newest such save is kept. 10 minutes by default: a save
    # of these networks takes well under a second, so at most 10 minutes of a long epoch are lost to a kill
    # for about 0.1% of the time. They observe, so they are not part of a run's identity.
    checkpoint_every_steps: Int = Field(0, ge=0)
    checkpoint_every_minutes: Number = Field(10.0, ge=0)
    # Early stopping: end the run once the validation accuracy has not improved for this many epochs (0: off,
    # the default). Needs data.validation: stopping on the test split would choose on it.
    patience: Int = Field(0, ge=0)

    def check(self) -> RunConfig:
        """Every check that involves several keys; returns the config. Each key's own value is checked
        when it is set; these wait until the whole config is (``Study.runs`` calls this)."""
        for part in (self.data, self.model, self.optimizer, self.schedule):
            part.check()
        if self.patience and not self.data.validation:
            raise ConfigError(f"patience={self.patience} stops on the validation accuracy: hold out a validation "
                              "split too (data.validation=N, e.g. 5000), or set patience=0")
        return self


# ---------------------------------------------------------------------------- keys, values, identity
def keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config class, in field order."""
    out = []
    for name in cls.model_fields:
        sub = _section(cls, name)
        out += keys(sub, f"{prefix}{name}.") if sub is not None else [prefix + name]
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


def _replace_nested(cfg: Section, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if rest:
        value = _replace_nested(getattr(cfg, head), rest, value)
    elif isinstance(value, str):
        value = _parse(value, type(cfg).model_fields[head].annotation)
    return type(cfg)(**{**dict(cfg), head: value})


def replace(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    """A copy of ``cfg`` with ``key`` set to ``value`` (a typed value, or a string to parse); checked."""
    _check_key(key)
    return _replace_nested(cfg, key, value)


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
    name = f"{cfg.data.name}_{cfg.model.name}_seed{cfg.seed}"
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


# ---------------------------------------------------------------------------- studies
@dataclasses.dataclass(frozen=True)
class Study:
    """A base config plus axes; ``runs()`` is every combination of the axes' values.

    An axis is ``(key, values)``, or ``((key1, key2, ...), rows)`` for keys that move together (a
    *tied* axis: each row sets every key, e.g. each optimizer with its own learning rate).
    ``epochs_by_dataset`` gives each dataset its epoch count (a protocol's choice; a dataset it does not list
    trains for its own, ``jaxres.catalog.Dataset.epochs``); setting or sweeping ``epochs`` replaces it for
    every dataset.
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

    def with_env(self, environ: Mapping[str, str] | None = None) -> Study:
        """Every run gets the environment's overrides of the compute settings (``from_env``)."""
        compute, study = from_env(self.base.compute, environ), self
        for key in env_overrides(environ):
            study = study.set(key, get(compute, key.partition(".")[2]))
        return study

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
            if self.epochs_by_dataset is not None:  # else the dataset's own (jaxres.catalog.Dataset.epochs)
                epochs = dict(self.epochs_by_dataset).get(cfg.data.name, catalog.DATASETS[cfg.data.name].epochs)
                cfg = _replace_nested(cfg, "epochs", epochs)
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
    same = len(set(epochs.values())) == 1  # one count for every dataset: the base's, for any dataset swept in
    base = RunConfig(data=DataConfig(train_subset=train_subset, test_subset=test_subset), compute=compute,
                     epochs=next(iter(epochs.values())) if same else RunConfig().epochs)
    return Study(name=name, description=description, base=base,
                 axes=(("data.name", SEED_DATASETS), ("model.name", SEED_MODELS), ("seed", seeds)),
                 epochs_by_dataset=None if same else tuple(epochs.items()))


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
        "epochs (extend with --epochs), otherwise as seed; seeds 0, 1, 2 (experiments.campaign runs it over "
        "sessions, float32 through oneDNN)",
        {"mnist": 10, "cifar10": 30}, seeds=(0, 1, 2)),
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
