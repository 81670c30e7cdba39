"""Every name jaxres accepts, described once, without JAX: datasets and their file formats, model presets,
normalizations, kernel initializers, optimizers and schedules.

``jaxres.config`` checks names against these tables (so ``--help``, ``--list-keys`` and ``--dry-run`` start no
JAX). An entry that needs code to work names that code by its import path ("module:attribute"), and
``resolve(kind, name)`` imports it when it is first needed: the reader of a file format, the class of a preset,
the builder of an optimizer or schedule, a kernel initializer. So a name and what builds it live in one entry,
never in two parallel tables that can drift apart, and this module imports nothing of jaxres's.
``tests/test_catalog.py`` walks every entry and resolves it.

Facts are declared, never parsed from a name: the report groups He et al.'s networks by ``Preset.family`` and
``Preset.depth``, not by reading digits in "resnet56". Adding a dataset whose files are in a known format is one
``Dataset`` entry (and its test row in ``tests/test_catalog.py``); a preset of an existing architecture is one
``Preset`` entry; an optimizer is one ``Optimizer`` entry here plus its builder function (Lion was added so).
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

KINDS = ("format", "model", "norm", "kernel_init", "optimizer", "schedule")


@dataclasses.dataclass(frozen=True)
class Built:
    """A name and the import path of what builds it ("module:attribute"), read by ``resolve``."""

    name: str
    builder: str


def resolve(kind: str, name: str) -> Any:
    """What builds ``name`` of ``kind`` (one of KINDS), imported now; a ValueError naming the known names for an
    unknown one. A format resolves to its reader, a preset to its module class, a norm to its factory maker, a
    kernel initializer to its factory, an optimizer or schedule to its builder."""
    table = _TABLES.get(kind)
    if table is None:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    module, _, attribute = table[name].builder.partition(":")
    return getattr(importlib.import_module(module), attribute)

# ---------------------------------------------------------------------------- datasets
RAW_DIR_ENV = "JAXRES_RAW_DIR"  # the default raw_dir: the folder with <dataset folder>/<original files>


@dataclasses.dataclass(frozen=True)
class Format(Built):
    """A file format: its original distribution files, in raw_dir/<folder>/ under the names tfds uses, and its
    reader, (the files, split) -> arrays."""

    files: tuple[str, ...] = ()


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("idx", "jaxres.data.formats:read_idx", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
    # MNIST's IDX, gzipped
    Format("cifar10-binary", "jaxres.data.formats:read_cifar10", ("cifar-10-binary.tar.gz",)),
    # 1 label byte + 3072 pixel bytes per record
    Format("cifar100-binary", "jaxres.data.formats:read_cifar100", ("cifar-100-binary.tar.gz",)),
    # coarse + fine label bytes + 3072 pixel bytes
    Format("npz", "jaxres.data.formats:read_npz"),
    # a user's arrays: one .npz with x_train, y_train, x_test, y_test (data.name is its path)
    Format("image-folder", "jaxres.data.folders:read_folder"),
    # a user's images, a folder per class: DIR/train/<class>/*, DIR/test/<class>/* (data.name is DIR)
)}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset: where its files are, what they hold, and how long the seed protocols train on it."""

    name: str                           # data.name, and the tfds builder of --source tfds
    format: str                         # a key of FORMATS
    shape: tuple[int, int, int]         # one image, HWC
    num_classes: int
    num_train: int
    num_test: int
    epochs: int                         # the seed protocol's epochs here (a study without its own uses it)
    folder: str = ""                    # in raw_dir; "" means the name
    # the seed study's numbers: model -> train / test accuracy, and the epoch its curves level off (read off them)
    published: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def files(self) -> tuple[str, ...]:
        return FORMATS[self.format].files

    @property
    def dir(self) -> str:
        return self.folder or self.name


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "idx", (28, 28, 1), 10, 60000, 10000, epochs=30,
            published={"seed_cnn": {"train": 0.9977, "test": 0.9848, "converged_epoch": 25},
                       "seed_resnet": {"train": 0.9994, "test": 0.9874, "converged_epoch": 10}}),
    Dataset("fashion_mnist", "idx", (28, 28, 1), 10, 60000, 10000, epochs=30),
    Dataset("cifar10", "cifar10-binary", (32, 32, 3), 10, 50000, 10000, epochs=100,
            published={"seed_cnn": {"train": 0.9882, "test": 0.5569, "converged_epoch": 80},
                       "seed_resnet": {"train": 0.98926, "test": 0.6067, "converged_epoch": 50}}),
    Dataset("cifar100", "cifar100-binary", (32, 32, 3), 100, 50000, 10000, epochs=100),
)}
USER_DATA_SUFFIXES = (".npz",)  # data.name may be the path of such a file: a user's data, its facts read from it


def is_user_data(name: str) -> bool:
    """Whether ``data.name`` names a user's data rather than a catalog entry: the path of an .npz, or of a folder of
    images by class (a path: it holds a "/", e.g. ./pets or /data/pets)."""
    return name not in DATASETS and (name.endswith(USER_DATA_SUFFIXES) or "/" in name)


def user_format(name: str) -> str:
    """The catalog format of a user's data: "npz" for an .npz, else "image-folder"."""
    return "npz" if name.endswith(USER_DATA_SUFFIXES) else "image-folder"


# a tfds builder by name (data.source=tfds): "svhn_cropped", "cifar10_corrupted/brightness_1", "mnist:3.*.*"
TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?$")


def data_kind(name: str, source: str = "device") -> str | None:
    """What ``data.name`` names, read with ``data.source``: "catalog" (a ``DATASETS`` entry), "tfds" (any other
    tfds builder, on source tfds: its facts from ``tfds.builder(name).info``), "npz" or "image-folder" (a user's
    files, on source device); None: nothing jaxres can read."""
    if name in DATASETS:
        return "catalog"
    if source == "tfds":
        return "tfds" if TFDS_NAME.match(name) else None
    return user_format(name) if is_user_data(name) else None


def data_label(name: str, source: str = "device") -> str:
    """``data.name`` as it goes into file and folder names: a catalog or tfds name ("/" and ":" made "_"), or a
    user's file's stem."""
    if data_kind(name, source) == "tfds":
        return re.sub(r"[/:*]", "_", name)
    if not is_user_data(name):
        return name
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[0] if user_format(name) == "npz" else last


PREPROCESS = ("scale", "standardize")   # x/255 (the seed study's) or per-channel standardization
SOURCES = ("device", "tfds")            # raw files read with numpy, batched on the device; or tf.data


# ---------------------------------------------------------------------------- models
# every one is made by jaxres.norms.make_norm ("none": no layer)
NORMS: dict[str, Built] = {n: Built(n, "jaxres.norms:make_norm") for n in ("none", "batch", "group", "layer")}
SHORTCUTS = ("identity", "projection", "none")
KERNEL_INITS: dict[str, Built] = {i.name: i for i in (
    Built("glorot_uniform", "jaxres.models:glorot_uniform"),  # Keras default, as in the seed study
    Built("he_normal", "jaxres.models:he_normal"),            # He et al.: N(0, 2 / fan_in), not truncated
)}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named network: its architecture facts and how ``jaxres.models`` builds it."""

    name: str
    family: str                         # "seed" (the seed study's networks) or "he" (He et al. 2015, CIFAR)
    depth: int                          # weighted layers: convolutions plus the dense head
    widths: tuple[int, ...]             # output channels of each conv (plain CNN) or each stage (ResNet)
    residual: bool                      # identity shortcuts around pairs of convolutions
    twin: str                           # the same network with (or without) the shortcuts, same parameters; "" if none
    module: str                         # the class in jaxres.models (resolve("model", name) imports it)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its constructor arguments

    @property
    def builder(self) -> str:
        return f"jaxres.models:{self.module}"

    @property
    def kind(self) -> str:
        return "resnet" if self.residual else "plain"


def _seed_resnet(name: str, residual: bool) -> Preset:
    return Preset(name, "seed", 12, (32,), residual, "seed_plain_twin" if residual else "seed_resnet", "ResNet",
                  {"stage_sizes": (5,), "widths": (32,), "inner_widths": (64,), "stem_width": 32, "head": "flatten",
                   "shortcut": "identity" if residual else "none"})


def _he(depth: int, residual: bool) -> Preset:
    """He et al.'s CIFAR networks: 3 stages of (depth - 2) / 6 blocks, 16/32/64 channels, batch norm."""
    n = (depth - 2) // 6
    kind, other = ("resnet", "plain") if residual else ("plain", "resnet")
    return Preset(f"{kind}{depth}", "he", depth, (16, 32, 64), residual, f"{other}{depth}", "ResNet",
                  {"stage_sizes": (n, n, n), "widths": (16, 32, 64), "stem_width": 16, "head": "avgpool",
                   "shortcut": "identity" if residual else "none", "norm": "batch", "kernel_init": "he_normal"})


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("seed_cnn", "seed", 6, (64, 32, 64, 32, 64), False, "", "PlainCNN",
           {"widths": (64, 32, 64, 32, 64)}),
    _seed_resnet("seed_resnet", True), _seed_resnet("seed_plain_twin", False),
    *(_he(d, True) for d in (20, 32, 44, 56, 110)), *(_he(d, False) for d in (20, 32, 44, 56, 110)),
)}


# ---------------------------------------------------------------------------- a user's networks
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")  # package.module:name


@dataclasses.dataclass(frozen=True)
class Network:
    """A network a user declares beside its code, named in a config by its import path (``model.name=
    "package.module:name"``, as Kauldron and Lightning's CLI name classes), so nothing is registered by editing
    jaxres. ``builder(num_classes)`` returns a Flax Linen module whose ``__call__(x, train)`` gives logits, or
    ``builder`` is a Flax NNX ``Module`` class taking ``(num_classes, rngs=...)`` (its ``__call__(x, train)``), or a
    ``functools.partial`` of one with keyword settings, bridged by ``flax.nnx.bridge.ToLinen``. Its facts are declared, never read off a name: whether it has
    shortcuts, the import path of its twin (the same layers with the shortcuts the other way; ``""``: none),
    its family and depth. They are written into every run's results.json, so reports need neither this code nor
    JAX. ``name``: what reports call it (default: its import path); a built-in preset's name is refused."""

    builder: Callable[..., Any]
    residual: bool
    twin: str = ""
    family: str = "user"
    depth: int = 0
    name: str = ""


def is_import_path(name: str) -> bool:
    return bool(IMPORT_PATH.match(name))


def network(path: str) -> Network:
    """The ``Network`` at ``path`` ("package.module:name"), imported now; a ValueError line for anything else."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - the user's module: why it does not import, in one line
        raise ValueError(f"model.name={path!r}: cannot import {module_name} ({type(e).__name__}: {e}); is its folder "
                         "on sys.path (PYTHONPATH, or beside the study file)?") from None
    if not hasattr(module, attribute):
        raise ValueError(f"model.name={path!r}: {module_name} has no {attribute!r}")
    entry = getattr(module, attribute)
    if not isinstance(entry, Network):
        what = "a class" if isinstance(entry, type) else f"a {type(entry).__name__}"
        raise ValueError(f"model.name={path!r} is {what}, not a jaxres.catalog.Network: declare one beside it, e.g. "
                         f"net = Network(builder={attribute if isinstance(entry, type) else '...'}, residual=False), "
                         f"and name {module_name}:net")
    if entry.name in PRESETS:
        raise ValueError(f"model.name={path!r} calls itself {entry.name!r}, the name of a built-in preset; give it "
                         "another name (Network(name=...)), so that reports cannot mix the two")
    if entry.twin and not is_import_path(entry.twin):
        raise ValueError(f"model.name={path!r}: its twin {entry.twin!r} is not an import path (package.module:name)")
    return entry


def model_facts(name: str) -> dict[str, Any]:
    """What reports need to know of a model, from the catalog or the user's declaration (imported): written into
    results.json, so a report needs neither the user's code nor JAX."""
    if name in PRESETS:
        p = PRESETS[name]
        return {"name": name, "family": p.family, "depth": p.depth, "residual": p.residual, "twin": p.twin,
                "kind": p.kind}
    n = network(name)
    return {"name": n.name or name, "family": n.family, "depth": n.depth, "residual": n.residual, "twin": n.twin,
            "kind": "resnet" if n.residual else "plain"}


# ---------------------------------------------------------------------------- optimizers and schedules
@dataclasses.dataclass(frozen=True)
class Optimizer(Built):
    """An optimizer: its builder, (settings, learning rate or schedule, decay mask) -> optax transformation, and
    its own settings with their defaults (optax's, or the seed study's Adam); a setting it does not list cannot
    be set for it."""

    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (
    Optimizer("adam", "jaxres.optim:adam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
    # weight decay as L2 on the gradient
    Optimizer("adamw", "jaxres.optim:adamw", {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
    # decoupled, times the learning rate
    Optimizer("sgd", "jaxres.optim:sgd", {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}),
    Optimizer("lion", "jaxres.optim:lion", {"b1": 0.9, "b2": 0.99, "weight_decay": 0.0}),
    # Chen et al. 2023 (optax.lion); decay decoupled, times the learning rate
)}
# (settings, peak lr, total steps or None) -> schedule
SCHEDULES: dict[str, Built] = {s: Built(s, f"jaxres.optim:{s}_schedule") for s in ("constant", "piecewise", "cosine")}

_TABLES: dict[str, Mapping[str, Any]] = {"format": FORMATS, "model": PRESETS, "norm": NORMS,
                                           "kernel_init": KERNEL_INITS, "optimizer": OPTIMIZERS,
                                           "schedule": SCHEDULES}
