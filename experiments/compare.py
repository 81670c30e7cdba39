"""The seed study end to end: train CNN / ResNet / plain twin on MNIST and CIFAR-10, write the table,
curves and report.

    python -m experiments.compare --protocol quick --raw-dir ../shared/datasets --out runs/quick
    python -m experiments.compare --report-only runs/quick

Each (dataset, model, seed) run writes OUT/<dataset>_<model>_seed<seed>/results.json; the
summary, curves and report are rebuilt from those files alone. A finished run is not
trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from jaxres.checkpoint import CheckpointError
from jaxres.data import DataError

PROTOCOLS = {
    # The seed study's training as we read it: full splits, 30 MNIST / 100 CIFAR-10 epochs, batch 128.
    "seed": {"epochs": {"mnist": 30, "cifar10": 100}, "train_subset": None, "test_subset": None},
    # A reduction that finishes all six runs on a 2-core CPU in about 10 minutes, on the real data.
    "quick": {"epochs": {"mnist": 3, "cifar10": 3}, "train_subset": 3072, "test_subset": 2000},
    # For tests: seconds per run.
    "tiny": {"epochs": {"mnist": 1, "cifar10": 1}, "train_subset": 256, "test_subset": 200},
}
DEFAULT_MODELS = ("seed_cnn", "seed_resnet", "seed_plain_twin")
DEFAULT_DATASETS = ("mnist", "cifar10")


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    from jaxres import data, models

    p = Parser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="quick",
                   help="seed: the seed study's full training; quick: a reduced run for a CPU; tiny: for tests")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated presets, from: {', '.join(models.PRESETS)}")
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"comma-separated datasets, from: {', '.join(data.DATASETS)}")
    p.add_argument("--seeds", default="0", help="comma-separated integer seeds (model init, data order)")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs for every dataset")
    p.add_argument("--train-subset", type=int, help="override: use the first N training examples")
    p.add_argument("--test-subset", type=int, help="override: use the first N test examples")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (the seed does not state one)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (betas 0.9/0.999)")
    p.add_argument("--norm", choices=list(models.NORMS), default="none", help="normalization in every model")
    p.add_argument("--augment", action="store_true", help="pad-crop-flip augmentation (off in the seed protocol)")
    p.add_argument("--source", choices=list(data.SOURCES), default="device",
                   help="device: raw files read with numpy, batches made on the device (no TensorFlow); "
                        "tfds: tensorflow-datasets + tf.data")
    p.add_argument("--raw-dir", default=os.environ.get(data.RAW_DIR_ENV),
                   help=f"folder with <dataset>/<original files> (default ${data.RAW_DIR_ENV})")
    p.add_argument("--data-dir", help="tfds data dir for --source tfds (default tfds's own)")
    p.add_argument("--out", default="runs/compare", help="output folder of the study")
    p.add_argument("--report-only", metavar="DIR", help="rebuild summary, curves and report from DIR's results")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept per run: the last KEEP plus the best")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


def _csv(value: str, known, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if v not in known:
            raise UsageError(f"unknown {what} {v!r}; choose from {', '.join(known)}")
    if not items:
        raise UsageError(f"no {what} given")
    return items


def environment() -> dict:
    import flax
    import jax
    import optax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "backend": jax.default_backend(), "device_count": jax.local_device_count(),
            "device_kind": jax.devices()[0].device_kind, "python": sys.version.split()[0]}


def run_one(args, dataset: str, model_name: str, seed: int, out: Path) -> Path:
    """Train one (dataset, model, seed), resuming from its checkpoints, and write its results.json."""
    import jax
    import optax

    from jaxres import checkpoint, data, metrics, models, train

    run = f"{dataset}_{model_name}_seed{seed}"
    run_dir = out / run
    proto = PROTOCOLS[args.protocol]
    epochs = args.epochs or proto["epochs"].get(dataset, 10)
    n_dev = jax.local_device_count()
    cfg = data.DataConfig(name=dataset, batch_size=args.batch_size, augment=args.augment, source=args.source,
                          train_subset=args.train_subset or proto["train_subset"],
                          test_subset=args.test_subset or proto["test_subset"], seed=seed)
    # What the run is; a run directory made with anything else is refused. The epoch count is
    # left out so that a finished run can be extended with more epochs.
    identity = {"run": run, "model": model_name, "dataset": dataset, "seed": seed, "batch_size": args.batch_size,
                "optimizer": "adam", "lr": args.lr, "b1": 0.9, "b2": 0.999, "norm": args.norm,
                "augment": args.augment, "source": args.source, "preprocess": cfg.preprocess,
                "train_subset": cfg.train_subset, "test_subset": cfg.test_subset}
    ckpt = checkpoint.Checkpointer(run_dir, identity, keep=args.keep)
    result_path = run_dir / "results.json"
    if result_path.exists():
        done = json.loads(result_path.read_text())
        if done.get("final") and done["config"]["epochs"] == epochs:
            print(f"{run}: finished earlier ({epochs} epochs, test accuracy "
                  f"{done['final']['test_accuracy']:.4f}); not trained again")
            return result_path
    ds = data.Dataset(cfg, raw_dir=args.raw_dir, data_dir=args.data_dir, n_devices=n_dev)
    model = models.get_model(model_name, norm=args.norm, num_classes=ds.num_classes)
    state = train.create_train_state(model, jax.random.key(seed), ds.shape, optax.adam(args.lr, b1=0.9, b2=0.999))
    print(f"{run}: {models.count_params(state.params):,} params, {ds.num_train} train / {ds.num_test} test "
          f"examples, {epochs} epochs of {ds.steps_per_epoch} steps, {n_dev} device(s)")
    writer = metrics.TensorBoardWriter(str(out / "tensorboard" / run))  # tensorboard --logdir OUT/tensorboard
    train_key = jax.random.fold_in(jax.random.key(seed), 1)  # the init key stays key(seed); steps get their own
    state, history = train.fit(state, ds, epochs, train_key, checkpointer=ckpt,
                               progress=not args.no_progress, on_epoch=writer)
    writer.close()
    ckpt.close()
    config = dict(identity, protocol=args.protocol, epochs=epochs, params=models.count_params(state.params),
                  epochs_by_dataset={d: args.epochs or e for d, e in proto["epochs"].items()})
    result = {"config": config, "history": history[:epochs], "final": history[epochs - 1],
              "wall_time_s": sum(h["epoch_time_s"] for h in history[:epochs]), "environment": environment()}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(result_path)  # atomic: a results.json is always complete
    return result_path


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from jaxres import data, models, report

        if args.report_only:
            for path in report.write_report(args.report_only):
                print(f"wrote {path}")
            return 0
        model_names = _csv(args.models, list(models.PRESETS), "model")
        datasets = _csv(args.datasets, list(data.DATASETS), "dataset")
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise UsageError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"output folder {out} is not writable ({e.strerror}); pass another --out") from None
        for d in datasets:  # fail on missing files before any training starts
            if args.source == "device":
                data.raw_files(d, args.raw_dir)
        for d in datasets:
            for m in model_names:
                for s in seeds:
                    run_one(args, d, m, s, out)
        for path in report.write_report(out):
            print(f"wrote {path}")
        return 0
    except (UsageError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compare: interrupted; finished runs are kept, run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
