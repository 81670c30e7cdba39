"""The named study presets (``STUDIES``, ``get_study``): the seed protocols (seed, seed_cpu, quick, tiny), He et
al.'s depth protocols and the normalization x optimizer study.
"""
from __future__ import annotations

from collections.abc import Sequence

from jaxres.config.sections import ComputeConfig, DataConfig, OptimizerConfig, RunConfig, ScheduleConfig
from jaxres.config.study import Study
from jaxres.config.values import ConfigError

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
DEPTH_STEPS_PER_EPOCH = 50000 // 128  # CIFAR-10's training split in batches of 128, the last partial one dropped
# The depth campaign's arithmetic, the same for every run so they pool (docs/benchmarks.md, "A campaign on two
# cores"): float32 through oneDNN, each convolution's two gradients one after the other: the campaign trains two
# runs at once on one thread each (--jobs 2), where they cannot overlap, and on the AVX2 EPYC that runs most
# sessions one after the other is as fast or faster with one run on both threads too.
DEPTH_FULL_CPU_COMPUTE = ComputeConfig(precision="float32", conv="onednn", overlap_grads=False)


def _piecewise(*boundaries: int) -> ScheduleConfig:
    return ScheduleConfig(name="piecewise", boundaries=boundaries, factor=0.1)


def _depth_protocol(name: str, description: str, depths: Sequence[int], epochs: int,
                    schedule: ScheduleConfig, train_subset: int | None = None, test_subset: int | None = None,
                    seeds: tuple[int, ...] = (0, 1, 2), compute: ComputeConfig = ComputeConfig()) -> Study:
    """He et al. (2015), section 4.2: plain and residual CIFAR-10 networks of several depths, batch norm,
    option-A shortcuts, SGD momentum 0.9 at lr 0.1, weight decay 1e-4 (on every parameter, as Caffe /
    fb.resnet.torch do), 4-pixel pad + crop + flip, per-channel standardization, batch 128; the schedule
    is the protocol's (theirs: /10 at two boundaries)."""
    base = RunConfig(data=DataConfig(name="cifar10", preprocess="standardize", augment=True,
                                     train_subset=train_subset, test_subset=test_subset),
                     optimizer=OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
                     schedule=schedule, compute=compute, epochs=epochs)
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
        "64k iterations); seeds 0, 1, 2. A GPU job: experiments/gpu_depth.sh", HE_DEPTHS, 164,
        _piecewise(32000, 48000)),
    "depth_cpu": _depth_protocol(
        "depth_cpu", "the depth study reduced to about an hour on a 2-core CPU: depths 20, 32, 56, the first "
        "12,800 training images (100 steps per epoch) and 2,000 test images, 10 epochs = 1,000 steps, the "
        "schedule scaled with it (lr /10 at 500 and 750, as 32k and 48k of 64k); seed 0",
        (20, 32, 56), 10, _piecewise(500, 750), 12800, 2000, seeds=(0,)),
    "depth_full_cpu": _depth_protocol(
        "depth_full_cpu", "He et al.'s degradation experiment at full data within a 2-core CPU's reach: depths 20, "
        "56, 110, all 50,000 / 10,000 CIFAR-10 images, 30 epochs (11,700 steps, under a fifth of their 64k), so "
        "the schedule is a budgeted one: lr 0.1 after a linear warm-up over the first 2 epochs (780 steps), "
        "cosine decay to zero over the run; otherwise as depth; float32 through oneDNN, fixed so every run "
        "pools; seeds 0, 1, 2 (experiments.campaign --campaign depth_full_cpu runs it over sessions)",
        (20, 56, 110), 30, ScheduleConfig(name="cosine", warmup_steps=2 * DEPTH_STEPS_PER_EPOCH),
        compute=DEPTH_FULL_CPU_COMPUTE),
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
