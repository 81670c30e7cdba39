"""What jaxres can train, described once, without JAX: datasets, model presets, and the names configs accept.

``jaxres.config`` checks names against these tables (so ``--help``, ``--list-keys`` and ``--dry-run``
start no JAX); the modules that do the work build from them: ``jaxres.data`` reads a dataset with the
reader of its ``format``, ``jaxres.models.get_model`` builds a preset from its ``module`` and
``settings``, ``jaxres.optim`` builds an optimizer by name (``OPTIMIZERS`` here says which settings each
one takes and its own defaults). Facts are declared, never parsed from a name: the report groups He et
al.'s networks by ``Preset.family`` and ``Preset.depth``, not by reading digits in "resnet56".

Adding a dataset whose files are in a known format is one ``Dataset`` entry (and its test row in
``tests/test_registry.py``); a preset of an existing architecture is one ``Preset`` entry; an
optimizer is one ``OPTIMIZERS`` entry here plus its builder in ``jaxres.optim``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# ---------------------------------------------------------------------------- datasets
RAW_DIR_ENV = "JAXRES_RAW_DIR"  # the default raw_dir: the folder with <dataset folder>/<original files>
# The original distribution files of each format, in raw_dir/<folder>/, under the names tfds uses.
FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "idx": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),  # MNIST's IDX, gzipped
    "cifar10-binary": ("cifar-10-binary.tar.gz",),    # 1 label byte + 3072 pixel bytes per record
    "cifar100-binary": ("cifar-100-binary.tar.gz",),  # coarse + fine label bytes + 3072 pixel bytes
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset: where its files are, what they hold, and how long the seed protocols train on it."""

    name: str                           # data.name, and the tfds builder of --source tfds
    format: str                         # a key of FORMAT_FILES (and of jaxres.data.READERS)
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
        return FORMAT_FILES[self.format]

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
PREPROCESS = ("scale", "standardize")   # x/255 (the seed study's) or per-channel standardization
SOURCES = ("device", "tfds")            # raw files read with numpy, batched on the device; or tf.data


# ---------------------------------------------------------------------------- models
NORMS = ("none", "batch", "group", "layer")
SHORTCUTS = ("identity", "projection", "none")
KERNEL_INITS = ("glorot_uniform", "he_normal")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named network: its architecture facts and how ``jaxres.models`` builds it."""

    name: str
    family: str                         # "seed" (the seed study's networks) or "he" (He et al. 2015, CIFAR)
    depth: int                          # weighted layers: convolutions plus the dense head
    widths: tuple[int, ...]             # output channels of each conv (plain CNN) or each stage (ResNet)
    residual: bool                      # identity shortcuts around pairs of convolutions
    twin: str                           # the same network with (or without) the shortcuts, same parameters; "" if none
    module: str                         # the class in jaxres.models
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its constructor arguments

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


# ---------------------------------------------------------------------------- optimizers and schedules
# Each optimizer's own settings and their defaults (optax's, or the seed study's Adam); a setting an optimizer
# does not list cannot be set for it. jaxres.optim.OPTIMIZER_BUILDERS has one builder per name.
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0},  # weight decay as L2 on the gradient
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0},  # decoupled, times the learning rate
    "sgd": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "lion": {"b1": 0.9, "b2": 0.99, "weight_decay": 0.0},  # Chen et al. 2023 (optax.lion); decay decoupled, x lr
}
SCHEDULES = ("constant", "piecewise", "cosine")  # jaxres.optim.SCHEDULE_BUILDERS has one builder per name
