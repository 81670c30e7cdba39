"""Run a study end to end: train every run, then write the summary table, curves and report.

    python -m experiments.compare --study quick --raw-dir ../shared/datasets --out runs/quick
    python -m experiments.compare --study quick --sweep optimizer.lr=0.001,0.003 --dry-run
    python -m experiments.compare --report-only runs/quick

A study is a preset (``--study``, see ``jaxres.config.STUDIES``) plus any overrides: ``--set KEY=VALUE``
for every run, ``--sweep KEY=V1,V2`` for a new axis (``--list-keys`` shows every key). ``--models``,
``--datasets`` and ``--seeds`` are sweeps; ``--epochs``, ``--lr``, ``--batch-size`` ... are sets.
Each run writes OUT/<run>/results.json (run names come from the config: ``jaxres.config.run_name``);
the summary, curves and report are rebuilt from those files alone. A finished run is not trained
again; an interrupted one continues from its last checkpoint. Exit status: 0 when every run
finished, 1 when a run diverged (the others still run), 2 for bad input.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from jaxres.checkpoint import CheckpointError
from jaxres.config import ConfigError
from jaxres.data import DataError
from jaxres.distributed import DistributedError


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see --help)")


# flag -> config key; a value given on the command line sets that key for every run
SET_FLAGS = {"epochs": "epochs", "train_subset": "data.train_subset", "test_subset": "data.test_subset",
             "batch_size": "data.batch_size", "lr": "optimizer.lr", "optimizer": "optimizer.name",
             "norm": "model.norm", "source": "data.source"}
SWEEP_FLAGS = {"models": "model.name", "datasets": "data.name", "seeds": "seed"}


def build_parser() -> argparse.ArgumentParser:
    from jaxres import config, data, models

    p = Parser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="studies:\n" + "\n".join(f"  {s.name:9s} {s.description}" for s in config.STUDIES.values()))
    s = p.add_argument_group("the study")
    s.add_argument("--study", "--protocol", dest="study", choices=list(config.STUDIES), default="quick",
                   help="the study preset (default quick; --protocol is the older name)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key for every run, e.g. optimizer.name=sgd, schedule.boundaries=[32000,48000]")
    s.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="make a config key an axis of the study, e.g. optimizer.lr=0.1,0.01 (repeatable); keys "
                        "that move together: optimizer.name,optimizer.lr=adam,0.001;sgd,0.1")
    s.add_argument("--models", help=f"sweep model.name: comma-separated presets, from {', '.join(models.PRESETS)}")
    s.add_argument("--datasets", help=f"sweep data.name: comma-separated, from {', '.join(data.DATASETS)}")
    s.add_argument("--seeds", help="sweep seed: comma-separated integers (the root of every random stream)")
    s.add_argument("--epochs", type=int, help="set epochs for every dataset (replaces the study's per-dataset epochs)")
    s.add_argument("--train-subset", type=int, help="set data.train_subset: the first N training examples")
    s.add_argument("--test-subset", type=int, help="set data.test_subset: the first N test examples")
    s.add_argument("--batch-size", type=int, help="set data.batch_size (global; the seed study's default: 128)")
    s.add_argument("--lr", type=float, help="set optimizer.lr (peak learning rate)")
    s.add_argument("--optimizer", help="set optimizer.name (adam, adamw, sgd)")
    s.add_argument("--norm", help=f"set model.norm ({', '.join(models.NORMS)})")
    s.add_argument("--augment", action="store_true", help="set data.augment=true (pad-crop-flip)")
    s.add_argument("--source", help="set data.source: device (raw files read with numpy, batches made on the "
                                    "device, no TensorFlow) or tfds (tensorflow-datasets + tf.data)")
    s.add_argument("--list-keys", action="store_true", help="print every config key with the study's value, and exit")
    s.add_argument("--dry-run", action="store_true", help="print the runs of the study, and exit")
    io = p.add_argument_group("files")
    io.add_argument("--raw-dir", default=os.environ.get(data.RAW_DIR_ENV),
                    help=f"folder with <dataset>/<original files> (default ${data.RAW_DIR_ENV})")
    io.add_argument("--data-dir", help="tfds data dir for --source tfds (default tfds's own)")
    io.add_argument("--out", default="runs/compare", help="output folder of the study (default runs/compare)")
    io.add_argument("--report-only", metavar="DIR", help="rebuild summary, curves and report from DIR's results")
    io.add_argument("--keep", type=int, default=2, help="checkpoints kept per run: the last KEEP plus the best (default 2)")
    io.add_argument("--devices", type=int, help="train on the first N local devices (default: all; data-parallel when N > 1, "
                         "by the parallel key: jit or pmap)")
    io.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    d = p.add_argument_group("several processes (jax.distributed; see README: SLURM, TPU pods)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process "
                   "($JAXRES_COORDINATOR)")
    d.add_argument("--num-processes", type=int, help="how many processes share the study ($JAXRES_NUM_PROCESSES)")
    d.add_argument("--process-id", type=int, help="this process's number, 0 .. N-1 ($JAXRES_PROCESS_ID)")
    d.add_argument("--distributed", choices=["auto"], help="auto: let JAX find coordinator and ids (SLURM, TPU pods)")
    d.add_argument("--init-timeout", type=int, default=300, help="seconds for every process to join (default 300)")
    d.add_argument("--heartbeat-timeout", type=int, default=100,
                   help="seconds without a sign of life before a process counts as dead (default 100)")
    return p


def distributed_setup(args: argparse.Namespace):
    from jaxres import distributed

    return distributed.setup_from(args.coordinator, args.num_processes, args.process_id, args.distributed == "auto",
                                  args.init_timeout, args.heartbeat_timeout)


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{flag} takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def make_study(args: argparse.Namespace):
    """The study the command line asks for: the preset, then the flags, then --set, then --sweep."""
    from jaxres import config

    study = config.get_study(args.study)
    for flag, key in SET_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            study = study.set(key, value if not isinstance(value, str) else value.strip())
    if args.augment:
        study = study.set("data.augment", True)
    for text in args.set:
        study = study.set(*_key_value(text, "--set"))
    for flag, key in SWEEP_FLAGS.items():
        if getattr(args, flag) is not None:
            study = study.sweep(key, getattr(args, flag))
    for text in args.sweep:
        study = study.sweep(*_key_value(text, "--sweep"))
    return study


def environment(precision: str = "float32") -> dict[str, Any]:
    from importlib import metadata

    import flax
    import jax
    import optax
    import orbax.checkpoint

    from jaxres import conv, cpu

    return {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
            "flax": flax.__version__, "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
            "backend": jax.default_backend(), "device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "device_kind": jax.devices()[0].device_kind,
            "conv_backend": conv.backend(), "conv_backend_note": conv.describe(precision), "cpu": cpu.host(),
            "cpu_fast_path": cpu.fast_path_status(),
            "cpu_keep_memory": cpu.memory_status(),
            "python": sys.version.split()[0], **code_version()}


def code_version() -> dict[str, Any]:
    """The git commit of the jaxres code that runs, and whether its tree had uncommitted changes
    (``git_clean``; None for both where jaxres is not a git checkout, e.g. installed from a wheel)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_clean": None}
    if commit.returncode or status.returncode:
        return {"git_commit": None, "git_clean": None}
    return {"git_commit": commit.stdout.strip(), "git_clean": not status.stdout.strip()}


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON; the row says why)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _finished(path: Path, cfg_dict: dict) -> dict | None:
    """The results of this exact run if ``path`` holds them; a damaged file is named and ignored."""
    import json

    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except ValueError:
        print(f"warning: {path} is damaged; the run is rebuilt from its checkpoints", file=sys.stderr)
        return None
    from jaxres import config

    return done if done.get("final") and not config.differences(done.get("config") or {}, cfg_dict) else None


def run_one(cfg, study_name: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run (resuming from its checkpoints) and write its results.json; returns its results,
    or {"skipped": why} when another process holds the run."""
    import jax

    from jaxres import checkpoint, config, conv, data, metrics, models, optim, train

    name = config.run_name(cfg)
    run_dir = out / name
    primary = jax.process_index() == 0  # with several processes, process 0 alone writes and prints
    lock = _acquire(checkpoint.RunLock(run_dir), name, primary)
    if lock is None:
        return {"skipped": f"{name} is held by another process"}
    say = print if primary else (lambda *a, **k: None)
    try:
        if lock.took_over:
            say(f"{name}: took over the lock left by {lock.took_over} (that process is gone)")
        cfg_dict = config.to_dict(cfg)
        result_path = run_dir / "results.json"
        done = _finished(result_path, cfg_dict)
        if done is not None:
            how = (f"diverged at step {done['diverged']['step']}" if done.get("diverged")
                   else f"test accuracy {done['final']['test_accuracy']:.4f}")
            say(f"{name}: finished earlier ({cfg.epochs} epochs, {how}); not trained again")
            return done
        streams = train.Streams.from_seed(cfg.seed)
        n_dev = args.devices or jax.local_device_count()  # on each process
        ds = data.make_dataset(cfg.data, raw_dir=args.raw_dir, data_dir=args.data_dir, order_seed=streams.order_seed,
                               n_devices=n_dev)
        model = cfg.build_model(ds.num_classes)
        tx = optim.make_optimizer(cfg, ds.steps_per_epoch)
        state = train.create_train_state(model, streams.init, ds.shape, tx)
        n_params = models.count_params(state.params)
        n_all = n_dev * jax.process_count()
        how = (f"{n_all} devices ({cfg.parallel}" + (f", {jax.process_count()} processes)" if jax.process_count() > 1
                                                      else ")") if n_all > 1 else "1 device")
        say(f"{name}: {cfg.data.name} {cfg.model.name} (norm {model.norm}), {n_params:,} params, "
            f"{ds.global_sizes['train']} train / {ds.global_sizes['test']} test examples, {cfg.epochs} epochs of "
            f"{ds.steps_per_epoch} steps, {cfg.optimizer.name} lr {cfg.optimizer.lr:g} ({cfg.schedule.name}), "
            f"{how}, precision {cfg.compute.precision}, conv backend {conv.describe(cfg.compute.precision)}")
        with checkpoint.Checkpointer(run_dir, config.identity(cfg), keep=args.keep) as ckpt:
            # tensorboard --logdir OUT/tensorboard
            writer = metrics.TensorBoardWriter(str(out / "tensorboard" / name)) if primary else None
            def on_layer_norms(epoch: int, norms: train.LayerNorms) -> None:
                metrics.append_layer_norms(run_dir / metrics.LAYER_FILE, state.layers, norms)
                writer.layer_norms(state.layers, norms)

            try:
                fit = train.fit(state, ds, cfg.epochs, streams, checkpointer=ckpt,
                                progress=not args.no_progress and primary, log=None if primary else say,
                                on_epoch=writer, layer_norms_every=cfg.layer_norms_every,
                                on_layer_norms=on_layer_norms if primary else None, parallel=cfg.parallel)
            finally:
                if writer is not None:
                    writer.close()
        history = fit.history[:cfg.epochs]
        result = {"schema": 2, "run": name, "study": study_name, "config": cfg_dict,
                  "identity": config.identity(cfg), "params": n_params, "model": models.knobs(model), "history": history, "final": history[-1],
                  "diverged": fit.diverged, "wall_time_s": sum(h["epoch_time_s"] for h in history),
                  "environment": environment(cfg.compute.precision)}
        if primary:
            checkpoint.write_json_atomic(result_path, json_safe(result))
        return result
    finally:
        lock.release()


def _acquire(lock, name: str, primary: bool):
    """The run's lock (process 0 takes it for all processes and tells them); None when another study holds it."""
    import jax
    import numpy as np

    got, why = lock, ""
    if primary:
        try:
            lock.acquire()
        except Exception as e:  # noqa: BLE001 - RunLocked; or a folder that cannot be written, raised below
            got, why = None, e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = int(multihost_utils.broadcast_one_to_all(np.int32(got is not None)))
        if not primary:
            return lock if ok else None
    if got is None:
        from jaxres import checkpoint

        if not isinstance(why, checkpoint.RunLocked):
            raise why
        print(f"{name}: {why}")
    return got


def _check_inputs(runs: list, args: argparse.Namespace) -> None:
    """Everything that can be checked before a file is written: data files, devices, --keep."""
    import jax

    from jaxres import data

    from jaxres import conv

    if args.keep < 1:
        raise UsageError(f"--keep must be at least 1, got {args.keep}")
    try:
        conv.backend()
    except ValueError as e:  # JAXRES_CONV names a backend that cannot run here
        raise UsageError(f"{e} (${conv.ENV})") from None
    n_dev = jax.local_device_count()
    if args.devices is not None and not 1 <= args.devices <= n_dev:
        raise UsageError(f"--devices must be between 1 and the {n_dev} local devices, got {args.devices}")
    if args.devices is not None and jax.process_count() > 1 and args.devices != n_dev:
        raise UsageError("with several processes every local device takes part: leave out --devices")
    n_dev = (args.devices or n_dev) * jax.process_count()
    if jax.process_count() > 1 and any(cfg.parallel != "jit" for cfg in runs):
        raise UsageError("with several processes the step runs as one sharded jit program: set parallel=jit")
    for cfg in runs:
        if cfg.data.source == "device":
            data.raw_files(cfg.data.name, args.raw_dir)
        for what, b in (("data.batch_size", cfg.data.batch_size), ("data.eval_batch_size", cfg.data.eval_batch_size)):
            if b % n_dev:
                raise UsageError(f"{what}={b} is not a multiple of the {n_dev} devices used; choose a multiple "
                                 "(or --devices)")


def _describe(runs: list) -> list[str]:
    from jaxres import config

    flats = [config.flatten(config.to_dict(r)) for r in runs]
    vary = [k for k in flats[0] if len({str(f[k]) for f in flats}) > 1]
    return [f"{config.run_name(r)}  " + " ".join(f"{k}={f[k]}" for k in vary) for r, f in zip(runs, flats)]


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import logging

    from jaxres.checkpoint import quiet_orbax

    # orbax's failures surface here as one-line errors; its own tracebacks (some logged late, when
    # asyncio collects a failed future) would bury them
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    supervised = _supervise_if_distributed(argv)
    if supervised is not None:
        return supervised
    with warnings.catch_warnings(), quiet_orbax():
        warnings.showwarning = _one_line  # one line per warning, without the source line
        return _main(argv)


def _supervise_if_distributed(argv: list[str] | None) -> int | None:
    """With several processes, this process supervises a child that does the work (``jaxres.distributed``):
    its exit status; None when there is nothing to supervise (one process, or this is the child)."""
    from jaxres import distributed

    argv = sys.argv[1:] if argv is None else list(argv)
    if os.environ.get(distributed.CHILD_ENV):
        return None
    try:
        args = build_parser().parse_args(argv)
        setup = distributed_setup(args)
    except (UsageError, distributed.DistributedError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    if not setup.active or args.report_only or args.list_keys or args.dry_run:
        return None
    name = f"process{setup.process_id}" if setup.process_id is not None else f"process-{os.getpid()}"
    return distributed.supervise(argv, setup, Path(args.out) / "logs" / f"{name}.log")


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from jaxres import config, distributed, report

        if args.report_only:
            for path in report.write_report(args.report_only):
                print(f"wrote {path}")
            return 0
        study = make_study(args)
        runs = study.runs()
        if args.list_keys:
            axes = study.axis_keys()
            tied = {k: keys for keys, _ in study.axes if isinstance(keys, tuple) for k in keys}
            for key in config.keys():
                if key in axes:
                    with_ = f", tied to {', '.join(k for k in tied[key] if k != key)}" if key in tied else ""
                    print(f"{key} = {axes[key]!r}  (axis{with_})")
                elif key == "epochs" and study.epochs_by_dataset:
                    print(f"{key} = {dict(study.epochs_by_dataset)!r}  (per dataset)")
                else:
                    print(f"{key} = {config.get(study.base, key)!r}")
            return 0
        if args.dry_run:
            print(f"study {study.name}: {len(runs)} runs")
            print("\n".join(_describe(runs)))
            return 0
        setup = distributed_setup(args)
        distributed.initialize(setup)
        _check_inputs(runs, args)
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write_test.{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"output folder {out} is not writable ({e.strerror}); pass another --out") from None
        start = time.perf_counter()
        outcomes = [run_one(cfg, study.name, out, args) for cfg in runs]
        import jax

        if jax.process_index() > 0:  # process 0 writes the report and says how the study went
            return 1 if any(o.get("diverged") for o in outcomes) else 0
        for path in report.write_report(out):
            print(f"wrote {path}")
        skipped = [o for o in outcomes if "skipped" in o]
        diverged = [o for o in outcomes if o.get("diverged")]
        print(f"{len(runs) - len(skipped)} of {len(runs)} runs done in {time.perf_counter() - start:.0f} s")
        if skipped:
            print(f"note: {len(skipped)} run(s) were being trained by another process and are not in this report "
                  f"yet; when they finish: python -m experiments.compare --report-only {out}")
        if diverged:
            print(f"compare: {len(diverged)} run(s) diverged: " + "; ".join(
                f"{o['run']} at step {o['diverged']['step']} (epoch {o['diverged']['epoch']})" for o in diverged)
                + f"; see {out / 'summary.md'}", file=sys.stderr)
            return 1
        return 0
    except (UsageError, ConfigError, DataError, CheckpointError, DistributedError, FileNotFoundError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file jaxres writes (results, report, TensorBoard) could not be written
        print(f"compare: error: cannot write {e.filename or 'a file'} ({e.strerror or e}); finished epochs and "
              "runs are kept, run the same command again when that is fixed", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compare: interrupted; finished epochs are kept, run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
