"""The run config's sections: ``DataConfig``, ``ModelConfig``, ``OptimizerConfig``, ``ScheduleConfig``,
``ComputeConfig`` and the ``RunConfig`` made of them, with the checks that involve several keys (``check``).

Every name a section accepts comes from ``jaxres.catalog``; no JAX.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field

from jaxres import catalog
from jaxres.config.values import ConfigError, Int, Number, Section, Size, Steps, names_of

OPTIMIZERS = tuple(catalog.OPTIMIZERS)
SCHEDULES = tuple(catalog.SCHEDULES)
PARALLEL = ("jit", "pmap")              # how several devices share a step (jaxres.train.fit)
DECAY_ON = ("all", "kernels")
PRECISIONS = ("float32", "bfloat16")    # compute.precision: what convolutions, dense layers and activations run in
CONV_BACKENDS = ("auto", "onednn", "xla-swapped", "xla", "winograd")  # compute.conv (jaxres.conv)
MAX_SEED = 2**31 - 1


class DataConfig(Section):
    """Which examples a run sees and how they are batched (``jaxres.data``)."""

    prefix: ClassVar[str] = "data."
    # a catalog dataset; on source tfds, any tfds image-classification builder by name ("svhn_cropped"); on source
    # device, the path of a user's arrays (.npz with x_train, y_train, x_test, y_test) or of a folder of images by
    # class (DIR/train/<class>/*, DIR/test/<class>/*). A user's or tfds's image shape, classes and sizes are read from
    # the data when the run is built, never typed here.
    name: str = "mnist"
    batch_size: Int = Field(128, ge=1)  # global, over all devices; the seed does not state one
    eval_batch_size: Int = Field(1000, ge=1)
    preprocess: names_of(catalog.PREPROCESS) = "scale"  # x/255 (the seed's choice) or per-channel standardization
    augment: bool = False               # 4-pixel pad + random crop + horizontal flip
    source: names_of(catalog.SOURCES) = "device"  # raw files read with numpy, batched on the device; or "tfds"
    train_subset: Int | None = None     # the first N training examples only
    test_subset: Int | None = None      # the first N test examples only
    # The last N of the (first train_subset) training examples held out as a validation split (0: none, the seed
    # protocol): evaluated every epoch, it chooses the best epoch and drives early stopping (``patience``), so the
    # test split is not used to choose anything.
    validation: Int = Field(0, ge=0)
    # Every image resized to H x W (bilinear; 32 means 32 x 32) as it is read, for a folder of images or a tfds
    # dataset by name whose images differ in size (Keras's image_dataset_from_directory(image_size=...)); None: as
    # they are, which must then be one size.
    image_size: Size | None = None

    @property
    def kind(self) -> str | None:
        """What ``name`` names (``catalog.data_kind``): "catalog", "tfds", "npz" or "image-folder"."""
        return catalog.data_kind(self.name, self.source)

    @pydantic.field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if catalog.data_kind(name) is None and catalog.data_kind(name, "tfds") is None:
            raise ConfigError(f"data.name={name!r} is not one of {', '.join(catalog.DATASETS)}, nor the path of a user's "
                              f"arrays ({', '.join(catalog.USER_DATA_SUFFIXES)}: x_train, y_train, x_test, y_test) or of "
                              "a folder of images by class (with a /: ./DIR, DIR/train/<class>/*), nor a tfds dataset "
                              "name (lower case, e.g. svhn_cropped, with data.source=tfds)")
        return name

    @pydantic.model_validator(mode="after")
    def _subsets(self) -> DataConfig:
        if self.name in catalog.DATASETS:  # a user's or tfds's data: its sizes are checked when it is read
            self._bounds(catalog.DATASETS[self.name].num_train, catalog.DATASETS[self.name].num_test)
        return self

    def _bounds(self, num_train: int, num_test: int) -> None:
        for key, n, size in (("train_subset", self.train_subset, num_train), ("test_subset", self.test_subset,
                                                                              num_test)):
            if n is not None and not 1 <= n <= size:
                raise ConfigError(f"data.{key}={n!r} must be >= 1 and <= {size}")

    def check(self, num_train: int | None = None, num_test: int | None = None) -> None:
        """The checks across keys; a user's or tfds's data is checked once read, with its sizes (``jaxres.data``)."""
        kind = self.kind
        if kind is None and self.source == "tfds" and catalog.is_user_data(self.name):
            raise ConfigError(f"data.name={self.name!r} is a user's file or folder, read by data.source=device, "
                              "not tfds")
        if kind is None:
            raise ConfigError(f"data.name={self.name!r} is not one of {', '.join(catalog.DATASETS)}, nor the path of a "
                              f"user's arrays ({', '.join(catalog.USER_DATA_SUFFIXES)}) or of a folder of images by "
                              "class (with a /: ./DIR); any other tfds dataset needs data.source=tfds")
        if self.image_size is not None and kind not in ("tfds", "image-folder"):
            raise ConfigError(f"data.image_size applies to a folder of images or a tfds dataset by name, not to "
                              f"{self.name} ({'arrays: resize them before saving' if kind == 'npz' else 'a catalog dataset'})")
        if num_train is None and self.name not in catalog.DATASETS:
            return
        if num_train is not None:
            self._bounds(num_train, num_test)
        num_train = num_train or catalog.DATASETS[self.name].num_train
        train = (self.train_subset or num_train) - self.validation
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
    # a preset (jaxres.catalog.PRESETS), or the import path of a user's jaxres.catalog.Network ("package.module:name";
    # imported when the run is built, so that --dry-run and --report-only import no user code and no JAX)
    name: str = "seed_cnn"
    norm: names_of(catalog.NORMS) | None = None  # None: the preset's own ("none" for the seed networks,
                                                 # "batch" for He et al.'s resnet20 ... plain110)
    zero_init_residual: bool = False
    shortcut: names_of(catalog.SHORTCUTS) | None = None
    kernel_init: names_of(catalog.KERNEL_INITS) | None = None

    @pydantic.field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in catalog.PRESETS and not catalog.is_import_path(name):
            raise ConfigError(f"model.name={name!r} is not one of {', '.join(catalog.PRESETS)}, nor the import path "
                              "(package.module:name) of a jaxres.catalog.Network")
        return name

    def check(self) -> None:
        preset = catalog.PRESETS.get(self.name)
        for key in ("norm", "shortcut", "zero_init_residual", "kernel_init"):
            if preset is None and getattr(self, key) not in (None, False):
                raise ConfigError(f"model.{key} does not apply to {self.name}: a user's network takes its settings "
                                  "from its own builder")
            if key in ("shortcut", "zero_init_residual") and getattr(self, key) not in (None, False) \
                    and preset.module != "ResNet":
                raise ConfigError(f"model.{key} does not apply to {self.name} (it has no residual blocks)")


class OptimizerConfig(Section):
    """The optax optimizer (``jaxres.optim.make_optimizer``). Defaults: the seed study's Adam. A setting left
    None takes the optimizer's own default (``jaxres.catalog.OPTIMIZERS``: Adam's betas 0.9/0.999, SGD's
    momentum 0.9, ...); one the optimizer does not take cannot be set (``check``)."""

    prefix: ClassVar[str] = "optimizer."
    name: names_of(catalog.OPTIMIZERS) = "adam"
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
    name: names_of(catalog.SCHEDULES) = "constant"
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
    # oneDNN computes a convolution's input and kernel gradients at once, one thread each (with exactly 2 OpenMP
    # threads), or one after the other on all threads. "auto": at once only where the CPU has AVX-512, the faster
    # order on each CPU kind measured (docs/benchmarks.md); the order used is in each run's conv_backend_note.
    overlap_grads: bool | Literal["auto"] = "auto"
    onednn_norm: bool = True            # batch norm through oneDNN where the convolutions are
    fast_path: bool = True              # CPU: XLA's convolutions away from YNNPACK (an XLA flag); off: conv=auto means xla
    keep_memory: bool = True            # CPU: glibc keeps freed memory (speed only: not part of the identity)



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
