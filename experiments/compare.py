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
finished, 1 when a run diverged (the others still run), 2 for bad input, 3 when the study is not complete: a
run is being trained by another process, or ``--report-only`` leaves out runs of the folder that are not finished
(both name them).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from jaxres import errors  # the only jaxres module imported before main() starts recording stop signals


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see --help)")


# flag -> config key; a value given on the command line sets that key for every run
SET_FLAGS = {"epochs": "epochs", "train_subset": "data.train_subset", "test_subset": "data.test_subset",
             "batch_size": "data.batch_size", "lr": "optimizer.lr", "optimizer": "optimizer.name",
             "norm": "model.norm", "source": "data.source", "image_size": "data.image_size"}
SWEEP_FLAGS = {"models": "model.name", "datasets": "data.name", "seeds": "seed"}


def build_parser() -> argparse.ArgumentParser:
    from jaxres import config, catalog

    p = Parser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="studies:\n" + "\n".join(f"  {s.name:9s} {s.description}" for s in config.STUDIES.values()))
    _study_flags(p.add_argument_group("the study"), config, catalog)
    _file_flags(p.add_argument_group("files"), catalog)
    _process_flags(p.add_argument_group("several processes (jax.distributed; see docs/training.md: SLURM, TPU pods)"))
    return p


def _study_flags(s, config, catalog) -> None:
    s.add_argument("--study", "--protocol", dest="study", default="quick", metavar="PRESET|FILE.py[:ARG]",
                   help="the study: a preset (default quick; listed below), or a study file whose get_study() (or "
                        "get_study(ARG)) returns a jaxres Study (docs/studies.md); --protocol is the older name")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key for every run, e.g. optimizer.name=sgd, schedule.boundaries=[32000,48000]")
    s.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="make a config key an axis of the study, e.g. optimizer.lr=0.1,0.01 (repeatable); keys "
                        "that move together: optimizer.name,optimizer.lr=adam,0.001;sgd,0.1")
    s.add_argument("--models", help=f"sweep model.name: comma-separated presets, from {', '.join(catalog.PRESETS)}, or "
                                    "import paths (package.module:name) of a jaxres.catalog.Network (docs/studies.md)")
    s.add_argument("--datasets", help=f"sweep data.name: comma-separated, from {', '.join(catalog.DATASETS)}; any tfds "
                                      "image-classification dataset by name with --source tfds; the path of an .npz of "
                                      "arrays or of a folder of images by class (docs/studies.md)")
    s.add_argument("--seeds", help="sweep seed: comma-separated integers (the root of every random stream)")
    s.add_argument("--epochs", type=int, help="set epochs for every dataset (replaces the study's per-dataset epochs)")
    s.add_argument("--train-subset", type=int, help="set data.train_subset: the first N training examples")
    s.add_argument("--test-subset", type=int, help="set data.test_subset: the first N test examples")
    s.add_argument("--batch-size", type=int, help="set data.batch_size (global; the seed study's default: 128)")
    s.add_argument("--lr", type=float, help="set optimizer.lr (peak learning rate)")
    s.add_argument("--optimizer", help=f"set optimizer.name ({', '.join(catalog.OPTIMIZERS)})")
    s.add_argument("--norm", help=f"set model.norm ({', '.join(catalog.NORMS)})")
    s.add_argument("--image-size", help="set data.image_size: resize a folder's or a tfds dataset's images as they "
                                        "are read, to N x N (32) or H x W (32,48)")
    s.add_argument("--augment", action="store_true", help="set data.augment=true (pad-crop-flip)")
    s.add_argument("--source", help="set data.source: device (raw files read with numpy, batches made on the "
                                    "device, no TensorFlow) or tfds (tensorflow-datasets + tf.data)")
    s.add_argument("--list-keys", action="store_true", help="print every config key with the study's value, and exit")
    s.add_argument("--dry-run", action="store_true", help="print the runs of the study, and exit")


def _file_flags(io, catalog) -> None:
    raw_env = catalog.RAW_DIR_ENV
    io.add_argument("--raw-dir", default=os.environ.get(raw_env),
                    help=f"folder with <dataset>/<original files> (default ${raw_env})")
    io.add_argument("--data-dir", help="tfds data dir for --source tfds (default tfds's own)")
    io.add_argument("--out", default="runs/compare", help="output folder of the study (default runs/compare)")
    io.add_argument("--report-only", metavar="DIR", help="rebuild summary, curves and report from DIR's results")
    io.add_argument("--no-report", action="store_true", help="train only: no summary, curves or report (build them "
                    "once all runs are done with --report-only; for jobs that each train part of a study)")
    io.add_argument("--keep", type=int, default=2, help="checkpoints kept per run: the last KEEP plus the best (default 2)")
    io.add_argument("--keep-epochs", type=epoch_list, default=(), metavar="E1,E2,...", help="also keep these epochs' "
                    "checkpoints, for measurements after training (python -m experiments.shattering measures each)")
    io.add_argument("--devices", type=int, help="train on the first N local devices (default: all; data-parallel when N > 1, "
                         "by the parallel key: jit or pmap)")
    io.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def epoch_list(text: str) -> tuple[int, ...]:
    """--keep-epochs: comma-separated epochs from 1."""
    try:
        epochs = tuple(int(e) for e in text.split(","))
    except ValueError:
        epochs = ()
    if not epochs or min(epochs) < 1:
        raise argparse.ArgumentTypeError(f"give epochs from 1, comma-separated (e.g. 1,2,5), got {text!r}")
    return epochs


def _process_flags(d) -> None:
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process "
                   "($JAXRES_COORDINATOR)")
    d.add_argument("--num-processes", type=int, help="how many processes share the study ($JAXRES_NUM_PROCESSES)")
    d.add_argument("--process-id", type=int, help="this process's number, 0 .. N-1 ($JAXRES_PROCESS_ID)")
    d.add_argument("--distributed", choices=["auto"], help="auto: let JAX find coordinator and ids (SLURM, TPU pods)")
    d.add_argument("--init-timeout", type=int, default=300, help="seconds for every process to join (default 300)")
    d.add_argument("--heartbeat-timeout", type=int, default=100,
                   help="seconds without a sign of life before a process counts as dead (default 100)")


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

    study = config.study_from(args.study).with_env()  # $JAXRES_CONV ... (config.COMPUTE_ENV); flags override them
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


def run_one(cfg, study: Any, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run of the study in OUT/<run name> (``jaxres.run``), TensorBoard events in OUT/tensorboard."""
    from jaxres import config, runner

    name = config.run_name(cfg)
    return runner.run(cfg, out / name, raw_dir=args.raw_dir, data_dir=args.data_dir, keep=args.keep,
                      keep_epochs=args.keep_epochs, devices=args.devices, progress=not args.no_progress, study=study.name,
                      study_source=study.source, tensorboard_dir=out / "tensorboard" / name)


def _check_inputs(runs: list, args: argparse.Namespace) -> None:
    """Everything that can be checked before a file is written: data files, devices, --keep."""
    import jax

    from jaxres import catalog, conv, data, runner

    runner.check_arguments(args.keep, args.devices, ("--keep", "--devices"))  # jaxres.run's own checks
    for name in sorted({cfg.model.name for cfg in runs} - set(catalog.PRESETS)):  # a user's network: importable?
        try:
            catalog.network(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    for name in {cfg.compute.conv for cfg in runs} - {"auto"}:
        try:
            conv._check(name)
        except ValueError as e:  # compute.conv (or $JAXRES_CONV) names a backend that cannot run here
            raise UsageError(f"compute.conv: {e}") from None
    if len({cfg.compute.fast_path for cfg in runs}) > 1:
        raise UsageError("compute.fast_path differs between runs, but it is set once per process (an XLA flag); "
                         "run each value as its own study")
    n_dev = jax.local_device_count()
    if args.devices is not None and jax.process_count() > 1 and args.devices != n_dev:
        raise UsageError("with several processes every local device takes part: leave out --devices")
    n_dev = (args.devices or n_dev) * jax.process_count()
    if jax.process_count() > 1 and any(cfg.parallel != "jit" for cfg in runs):
        raise UsageError("with several processes the step runs as one sharded jit program: set parallel=jit")
    for cfg in runs:
        if cfg.data.source == "device":
            data.raw_files(cfg.data.name, args.raw_dir)
        if cfg.data.kind in ("npz", "image-folder"):  # a user's data: read and checked whole, its sizes known now
            d = data.info(cfg.data.name, cfg.data.image_size)
            cfg.data.check(d.num_train, d.num_test)
        elif cfg.data.kind == "tfds":  # any tfds dataset by name: its facts from builder.info, checked now
            from jaxres.data import tfds_source

            d = tfds_source.tfds_info(tfds_source.tfds_builder(cfg.data.name, args.data_dir), cfg.data.image_size)
            cfg.data.check(d.num_train, d.num_test)
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
    """The command; returns its exit status. From its first line on, Ctrl-C, SIGTERM and SIGUSR1 are recorded
    and acted on where that is safe (``jaxres.errors.stops_at_step_boundaries``): before training, between runs,
    or after the step under way, which is saved. Raised inside the import of JAX or a compilation, a
    KeyboardInterrupt can crash the process, print pages, or be swallowed by a callback while training goes on."""
    import logging

    try:
        with errors.stops_at_step_boundaries():
            # orbax's failures surface here as one-line errors; its own tracebacks (some logged late, when
            # asyncio collects a failed future) would bury them
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            supervised = _supervise_if_distributed(argv)
            if supervised is not None:
                return supervised
            with warnings.catch_warnings(), _quiet_orbax_if_training(argv):
                warnings.showwarning = _one_line  # one line per warning, without the source line
                return _main(argv)
    except KeyboardInterrupt as e:  # a stop recorded after _main's last look, or a second signal
        return _stopped(e)


def _stopped(e: KeyboardInterrupt) -> int:
    """The line and exit status of a run stopped by Ctrl-C, or by SIGTERM / SIGUSR1 (a scheduler stopping or warning
    the job)."""
    signum = getattr(e, "signum", signal.SIGINT)
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    print(f"compare: {how}; finished epochs are kept, run the same command to continue", file=sys.stderr)
    return 128 + signum


def _quiet_orbax_if_training(argv: list[str] | None):
    """orbax's loggers quieted (``jaxres.checkpoint.quiet_orbax``) unless the command only prints (--help,
    --list-keys, --dry-run, --report-only), which must not import JAX and orbax."""
    import contextlib

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "--list-keys", "--dry-run") or a.startswith("--report-only") for a in argv):
        return contextlib.nullcontext()
    from jaxres.checkpoint import quiet_orbax

    return quiet_orbax()


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
    errors.raise_if_stopped()  # before the child starts; from then on signals are passed to it
    return distributed.supervise(argv, setup, Path(args.out) / "logs" / f"{name}.log")


def _main(argv: list[str] | None) -> int:
    from jaxres.config import ConfigError
    from jaxres.distributed import DistributedError

    try:
        args = build_parser().parse_args(argv)
        if args.report_only is not None:
            return _report_only(args.report_only)
        study = make_study(args)
        if args.list_keys:
            return _list_keys(study)
        if args.dry_run:
            runs = study.runs()
            print(f"study {study.name}: {len(runs)} runs")
            print("\n".join(_describe(runs)))
            return 0
        return _train_study(study, args)
    except (UsageError, ConfigError, errors.DataError, errors.CheckpointError, DistributedError,
            FileNotFoundError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file jaxres writes (results, report, TensorBoard) could not be written
        print(f"compare: error: cannot write {e.filename or 'a file'} ({e.strerror or e}); finished epochs and "
              "runs are kept, run the same command again when that is fixed", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGUSR1 (a scheduler stopping or warning the job)
        return _stopped(e)


def _report_only(folder: str) -> int:
    """The report rebuilt from the folder's results files; exit status 3 where runs started there are left out
    (unfinished, training elsewhere, or damaged), named, also where no run has finished at all."""
    from jaxres import report

    if not folder.strip():
        raise UsageError("--report-only needs the folder of a study")
    finished = report.load_results(folder)  # a damaged file is named here, once
    unfinished = report.unfinished_runs(folder, finished)
    if finished:
        for path in report.write_report(folder, finished):
            print(f"wrote {path}")
    elif not unfinished:
        raise FileNotFoundError(f"no finished runs (*/results.json) and no started run in {folder}")
    if unfinished:
        what = (f"the report leaves out {len(unfinished)} unfinished run(s)" if finished else
                f"no report: no run has finished ({len(unfinished)} started)")
        print(f"compare: {what}: "
              + "; ".join(f"{run}: {why}" for run, why in unfinished)
              + "; run the study's command again to finish them", file=sys.stderr)
        return 3
    return 0


def _list_keys(study: Any) -> int:
    """--list-keys: every config key with its value in the study, its axes marked."""
    from jaxres import config

    axes = study.axis_keys()
    tied = {k: keys for keys, _ in study.axes if isinstance(keys, tuple) for k in keys}
    for key in config.keys():
        if key in axes:
            with_ = f", tied to {', '.join(k for k in tied[key] if k != key)}" if key in tied else ""
            print(f"{key} = {axes[key]!r}  (axis{with_})")
        elif key == "epochs" and study.epochs_by_dataset:
            print(f"{key} = {dict(study.epochs_by_dataset)!r}  (per dataset; any other: its own)")
        else:
            print(f"{key} = {config.get(study.base, key)!r}")
    return 0


def _writable(folder: str) -> Path:
    """The study's output folder, made and checked writable before any run starts."""
    if not folder.strip():
        raise UsageError("--out needs a folder (an empty one would write the study into the current directory)")
    out = Path(folder)
    from jaxres.runner import unwritable_name

    if why := unwritable_name(out):
        raise UsageError(f"--out {why}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"output folder {out} is not writable ({e.strerror}); pass another --out") from None
    return out


def _train_study(study: Any, args: argparse.Namespace) -> int:
    """Preflight, then every run of the study one after the other, then the report (process 0)."""
    from jaxres import distributed

    runs = study.runs()
    setup = distributed_setup(args)
    errors.raise_if_stopped()  # a stop asked for while the command started: nothing is begun yet
    import jaxres

    jaxres.setup(runs[0].compute)  # the process-wide CPU settings, before JAX starts its backend
    distributed.initialize(setup)
    _check_inputs(runs, args)
    out = _writable(args.out)  # made after the inputs are checked: a bad input leaves nothing behind
    start = time.perf_counter()
    outcomes = []
    for cfg in runs:
        errors.raise_if_stopped()  # a stop asked for after the last run's last step (its results written)
        outcomes.append(run_one(cfg, study, out, args))
    import jax

    if jax.process_index() > 0:  # process 0 writes the report and says how the study went
        return 1 if any(o.get("diverged") for o in outcomes) else 0
    return _finish(outcomes, out, args, time.perf_counter() - start)


def _finish(outcomes: list[dict[str, Any]], out: Path, args: argparse.Namespace, seconds: float) -> int:
    """The report, and how the study went: 1 where a run diverged."""
    from jaxres import report

    skipped = [o for o in outcomes if "skipped" in o]
    _rewrite_lost_results([o for o in outcomes if "skipped" not in o], out)
    if not args.no_report and (not skipped or any(out.glob("*/results.json"))):  # unless every run is held elsewhere
        for path in report.write_report(out):
            print(f"wrote {path}")
        print("\n" + (out / "summary.md").read_text().rstrip())  # the study's final table, as in summary.md
    diverged = [o for o in outcomes if o.get("diverged")]
    print(f"{len(outcomes) - len(skipped)} of {len(outcomes)} runs done in {seconds:.0f} s")
    if skipped:  # the study is not complete: said on stderr, exit status 3 as --report-only's for unfinished runs
        print(f"compare: {len(skipped)} run(s) are being trained by another process and are not in a report "
              f"yet: {', '.join(o['run'] for o in skipped)}; when they finish: python -m experiments.compare "
              f"--report-only {out}", file=sys.stderr)
    if diverged:
        print(f"compare: {len(diverged)} run(s) diverged: " + "; ".join(
            f"{o['run']} at step {o['diverged']['step']} (epoch {o['diverged']['epoch']})" for o in diverged)
            + f"; see {out / 'summary.md'}", file=sys.stderr)
        return 1
    return 3 if skipped else 0


def _rewrite_lost_results(outcomes: list[dict[str, Any]], out: Path) -> None:
    """The results.json of a run this study finished that is gone or damaged by the study's end (deleted while
    another run trained): written again from this process's copy, with one line, so the report has every run."""
    from jaxres import results

    for o in outcomes:
        path = out / o["run"] / results.RESULTS
        problem = results.read(path)[1]
        if problem is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            results.write(path, o)
            print(f"warning: {path}: {problem} at the end of the study; written again from the run's results",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
