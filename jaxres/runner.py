"""Train one ``RunConfig`` end to end: ``jaxres.run(cfg, workdir)``.

    import jaxres
    from jaxres import config

    jaxres.setup()                       # first, before JAX runs anything (CPU: XLA flag, kept memory)
    cfg = config.get_study("tiny").runs()[0]
    result = jaxres.run(cfg, "runs/mine/" + config.run_name(cfg), raw_dir="../shared/datasets")
    result["final"]["test_accuracy"]

``run`` takes the run folder's lock, resumes from its checkpoints (or returns the finished results without
training again), checkpoints every epoch, writes TensorBoard events, per-layer norms and ``results.json``, and
returns the results (the dict ``results.json`` holds). ``experiments.compare`` is this in a loop over a study,
plus the report.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def run(cfg, workdir: str | Path, *, raw_dir: str | Path | None = None, data_dir: str | Path | None = None, keep: int = 2,
        devices: int | None = None, progress: bool = True, study: str = "", study_source: dict | None = None,
        tensorboard_dir: str | Path | None = None, log: Callable[[str], None] = print,
        keep_epochs: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train ``cfg`` in ``workdir`` (its run folder) and return its results.

    ``raw_dir``: the folder with ``<dataset>/<original files>`` (``data.source=device``); ``data_dir``: tfds's
    data dir (``data.source=tfds``); ``keep``: checkpoints kept, the last ``keep`` plus the best; ``devices``:
    train on the first N local devices (default all); ``tensorboard_dir``: default ``workdir/tensorboard``;
    ``log``: where the run's header and epoch lines go; ``keep_epochs``: epochs whose checkpoints are kept as well
    (for probes after training, ``experiments.shattering``). When another process holds the run, nothing is trained
    and ``{"run": name, "skipped": why}`` comes back. Raises ``ConfigError``, ``DataError`` or ``CheckpointError``
    (one line each) for bad input, a missing file or a checkpoint that cannot be written.
    """
    from jaxres import errors

    cfg = _as_config(cfg)
    for what, value in (("workdir", workdir), ("raw_dir", raw_dir), ("data_dir", data_dir),
                        ("tensorboard_dir", tensorboard_dir)):
        if not (value is None and what != "workdir" or isinstance(value, (str, os.PathLike)) and str(value).strip()):
            raise _config_error(f"{what} must be a folder (a str or a path), got {value!r}")
    for what, value in (("workdir", workdir), ("tensorboard_dir", tensorboard_dir)):
        if value is not None and (why := unwritable_name(value)):
            raise _config_error(f"{what} {why}")
    data_dir = None if data_dir is None else str(data_dir)
    if study is not None and not isinstance(study, str):
        raise _config_error(f"study must be a str, got {study!r}")
    if study_source is not None and not isinstance(study_source, Mapping):
        raise _config_error(f"study_source must be a dict (Study.source), got {study_source!r}")
    if not callable(log):
        raise _config_error(f"log must be a function taking one str, got {log!r}")
    if not (isinstance(keep_epochs, (tuple, list)) and all(isinstance(e, int) and not isinstance(e, bool) and e >= 1
                                                          for e in keep_epochs)):
        raise _config_error(f"keep_epochs must be a list of epochs from 1, got {keep_epochs!r}")
    opts = RunOptions(raw_dir, data_dir, keep, devices, bool(progress), study, tensorboard_dir, log,
                      dict(study_source) if study_source else None, tuple(keep_epochs))
    with errors.stops_at_step_boundaries():  # a stop signal ends the run at a step boundary, that step saved
        return _run(cfg, Path(workdir), opts)


def _config_error(message: str):
    from jaxres.config import ConfigError

    return ConfigError(message)


def _as_config(cfg):
    """``cfg`` as a RunConfig: itself, or the RunConfig its ``config.to_dict`` form (a mapping) describes."""
    from jaxres import config

    if isinstance(cfg, config.RunConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return config.from_dict(cfg)
    raise _config_error(f"cfg must be a jaxres.config.RunConfig (or the dict config.to_dict makes of one), got "
                        f"{type(cfg).__name__}")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How ``run`` runs a config (``run``'s keyword arguments): none of it changes a number of the run."""

    raw_dir: str | Path | None = None
    data_dir: str | None = None
    keep: int = 2
    devices: int | None = None
    progress: bool = True
    study: str = ""
    tensorboard_dir: str | Path | None = None
    log: Callable[[str], None] = print
    study_source: dict[str, Any] | None = None  # where a study file defined the run (``Study.source``)
    keep_epochs: tuple[int, ...] = ()  # epochs whose checkpoints are kept besides the last ``keep`` and the best


def _run(cfg, workdir: Path, opts: RunOptions) -> dict[str, Any]:
    """``run`` under the lock of its folder: the finished results, or the run trained (resumed) to its end."""
    import jax

    from jaxres import checkpoint, config, conv, results

    cfg = config.with_env(cfg)  # the environment's overrides of the compute settings (config.COMPUTE_ENV)
    setup(cfg.compute)
    check_arguments(opts.keep, opts.devices)
    name = config.run_name(cfg)
    primary = jax.process_index() == 0  # with several processes, process 0 alone writes and prints
    new_folder = not workdir.exists()
    lock = _acquire(checkpoint.RunLock(workdir), name, primary, opts.log)
    if lock is None:
        return {"run": name, "skipped": f"{name} is held by another process"}
    say = opts.log if primary else (lambda *a, **k: None)
    try:
        with conv.traced_with(cfg.compute):  # what this run's header, convolutions and norms are traced with
            if lock.took_over:
                say(f"{name}: took over the lock left by {lock.took_over} (that process is gone)")
            done = results.finished(workdir / results.RESULTS, config.to_dict(cfg))
            if done is not None:
                say(f"{name}: finished earlier ({results.how_it_ended(done)}); not trained again")
                return done
            result = _train(cfg, workdir, opts, name, primary, say)
            if primary:
                results.write(workdir / results.RESULTS, result)
            return result
    finally:
        lock.release()
        if new_folder and primary and [p.name for p in workdir.iterdir()] == [".lock"]:
            shutil.rmtree(workdir, ignore_errors=True)  # rejected before anything was written: leave no folder


def _train(cfg, workdir: Path, opts: RunOptions, name: str, primary: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Read the data, build the model and its state, print the run header, train, and return the results."""
    import jax

    from jaxres import catalog, checkpoint, config, data, errors, metrics, models, optim, results, stopping, train

    streams = train.Streams.from_seed(cfg.seed)
    n_dev = opts.devices or jax.local_device_count()  # on each process
    ds = data.make_dataset(cfg.data, raw_dir=opts.raw_dir, data_dir=opts.data_dir, order_seed=streams.order_seed,
                           n_devices=n_dev)
    errors.raise_if_stopped()  # a stop asked for while the data was read: nothing to save yet
    model = models.from_config(cfg, ds.num_classes)
    state = train.create_train_state(model, streams.init, ds.shape, optim.make_optimizer(cfg, ds.steps_per_epoch))
    n_params = models.count_params(state.params)
    say(_header(cfg, name, model, n_params, ds, n_dev))
    errors.raise_if_stopped()
    with checkpoint.Checkpointer(workdir, config.identity(cfg), keep=opts.keep, keep_epochs=opts.keep_epochs,
                                 every_steps=cfg.checkpoint_every_steps,
                                 every_minutes=cfg.checkpoint_every_minutes) as ckpt:
        # tensorboard --logdir <tensorboard_dir>
        tb = Path(opts.tensorboard_dir) if opts.tensorboard_dir is not None else workdir / "tensorboard"
        writer = metrics.TensorBoardWriter(str(tb)) if primary else None

        def on_layer_norms(epoch: int, norms: train.LayerNorms) -> None:
            results.append_layer_norms(workdir / results.LAYER_FILE, state.layers, norms)
            writer.layer_norms(state.layers, norms)

        schedule = optim.learning_rate(cfg, ds.steps_per_epoch)

        def on_steps(first: int, losses) -> None:
            writer.steps(first, {"train_loss": losses, "learning_rate": optim.rates(schedule, first, len(losses))})

        try:
            fit = train.fit(state, ds, cfg.epochs, streams, checkpointer=ckpt, progress=opts.progress and primary,
                            log=None if primary else say, on_epoch=writer, layer_norms_every=cfg.layer_norms_every,
                            on_layer_norms=on_layer_norms if primary else None, parallel=cfg.parallel,
                            patience=cfg.patience, on_steps=on_steps if primary else None)
        finally:
            if writer is not None:
                writer.close()
    if len(fit.history) > cfg.epochs:  # resumed from a checkpoint past the end asked for
        raise results.too_few_epochs(workdir, len(fit.history), cfg.epochs)
    history = fit.history
    return {"schema": results.SCHEMA, "run": name, "study": opts.study, "study_source": opts.study_source,
            "config": config.to_dict(cfg),
            "identity": config.identity(cfg), "params": n_params, "model": models.knobs(model),
            "model_facts": catalog.model_facts(cfg.model.name), "data_facts": _data_facts(ds),
            "history": history, "final": history[-1], "best": stopping.best_epoch(history), "diverged": fit.diverged,
            "stopped_early": fit.stopped_early,
            "wall_time_s": sum(h["epoch_time_s"] for h in history), "environment": environment(cfg.compute.precision)}


def _data_facts(ds) -> dict[str, Any]:
    """What the data was, as read (the catalog's entry, or a user's or tfds's data): reports need no data to say it."""
    d = ds.info
    return {"name": d.name, "format": d.format, "shape": list(d.shape), "num_classes": d.num_classes,
            "num_train": d.num_train, "num_test": d.num_test}


def _header(cfg, name: str, model, n_params: int, ds, n_dev: int) -> str:
    """The run's first line: what trains, on what, with which settings and backend."""
    import jax

    from jaxres import conv, cpu

    n_all = n_dev * jax.process_count()
    how = (f"{n_all} devices ({cfg.parallel}" + (f", {jax.process_count()} processes)" if jax.process_count() > 1
                                                  else ")") if n_all > 1 else "1 device")
    unusual = [f"{what} {status}" for what, status in (("fast path", cpu.fast_path_status()),
                                                         ("kept memory", cpu.memory_status())) if status != "applied"]
    cpu_note = f", CPU setup: {', '.join(unusual)}" if jax.default_backend() == "cpu" and unusual else ""
    norm = f" (norm {model.norm})" if "norm" in getattr(model, "__dataclass_fields__", {}) else ""
    return (f"{name}: {cfg.data.name} {cfg.model.name}{norm}, {n_params:,} params, "
            f"{ds.global_sizes['train']} train / {ds.global_sizes['test']} test examples, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of "
            f"{ds.steps_per_epoch} steps, {cfg.optimizer.name} lr {cfg.optimizer.lr:g} ({cfg.schedule.name}), "
            f"{how}, {_compute_note(cfg.compute)}, conv {conv.brief(cfg.compute.precision)}{cpu_note}, "
            f"{_saves_note(cfg)}")


def _saves_note(cfg) -> str:
    """When the run saves inside an epoch, in words (``checkpoint_every_steps``, ``checkpoint_every_minutes``)."""
    n, minutes = cfg.checkpoint_every_steps, cfg.checkpoint_every_minutes
    every = ([f"{n} steps" if n > 1 else "step"] if n else []) + (
        [f"{minutes:g} minutes" if minutes != 1 else "minute"] if minutes else [])
    return "saves inside an epoch every " + " or ".join(every) if every else "no saves inside an epoch"


def _compute_note(compute) -> str:
    """The compute settings in words: the precision, and every other key that is not its default."""
    from jaxres import config

    default = config.ComputeConfig()
    rest = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in dict(compute).items()
            if k != "precision" and v != getattr(default, k)]
    return f"precision {compute.precision}" + (f" (compute {', '.join(rest)})" if rest else "")


def setup(compute=None) -> dict[str, str]:
    """The process-wide settings jaxres wants on CPU, applied once, explicitly (importing jaxres changes
    nothing): XLA's own convolutions routed away from YNNPACK (an XLA flag, read when JAX's backend starts)
    and freed memory kept in the process (glibc ``mallopt``), as ``compute`` (a ``ComputeConfig``; default: the
    defaults with the environment's overrides) asks: ``compute.fast_path``, ``compute.keep_memory``. Call it
    before JAX runs anything; later, it says (and warns) that it came too late. Returns what was done, in words."""
    from jaxres import cpu

    return cpu.setup(compute)


def unwritable_name(path: str | os.PathLike) -> str | None:
    """Why a folder of this name cannot hold checkpoints (orbax writes UTF-8 paths: a name that is not valid
    UTF-8 fails at the first save, after a whole epoch), or None. Checked before anything is trained."""
    try:
        str(Path(path).absolute()).encode("utf-8")
    except UnicodeEncodeError:
        return (f"{os.fsdecode(path)!r} is not valid UTF-8, and the checkpoints (orbax) can only be written under "
                "UTF-8 paths; choose a name in UTF-8")
    return None


def check_arguments(keep: int, devices: int | None, names: tuple[str, str] = ("keep", "devices")) -> None:
    """``keep`` and ``devices`` as ``run`` takes them, or one ConfigError line naming them as ``names`` (the CLI:
    its flags)."""
    import jax

    from jaxres.config import ConfigError

    for name, value in zip(names, (keep, devices)):
        if not (isinstance(value, int) and not isinstance(value, bool) or value is None and name == names[1]):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if keep < 1:
        raise ConfigError(f"{names[0]} must be at least 1, got {keep}")
    n_dev = jax.local_device_count()
    if devices is not None and not 1 <= devices <= n_dev:
        raise ConfigError(f"{names[1]} must be between 1 and the {n_dev} local devices, got {devices}")


def _acquire(lock, name: str, primary: bool, log: Callable[[str], None]):
    """The run's lock (process 0 takes it for all processes and tells them); None when another study holds it."""
    import jax
    import numpy as np

    from jaxres import checkpoint

    got, why = lock, None
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
        if not isinstance(why, checkpoint.RunLocked):
            raise why
        log(f"{name}: {why}")
    return got


def environment(precision: str = "float32") -> dict[str, Any]:
    """Versions, devices, the convolution backend and CPU settings a run used, and the code's git commit."""
    from importlib import metadata

    import flax
    import jax
    import optax
    import orbax.checkpoint

    from jaxres import conv, cpu, onednn

    return {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
            "flax": flax.__version__, "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
            "backend": jax.default_backend(), "device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "device_kind": jax.devices()[0].device_kind,
            "conv_backend": conv.backend(), "conv_backend_note": conv.describe(precision), "onednn": _onednn_version(),
            "onednn_library": onednn.library() if _onednn_version() else None,
            "cpu": cpu.host(),
            "cpu_fast_path": cpu.fast_path_status(), "cpu_keep_memory": cpu.memory_status(),
            "python": sys.version.split()[0], **code_version()}


def _onednn_version() -> str | None:
    """The oneDNN version the convolutions ran on ("3.2.0"), None where they ran in XLA."""
    import jax

    from jaxres import onednn

    return onednn.version() if jax.default_backend() == "cpu" else None


def code_version() -> dict[str, Any]:
    """The git commit of the jaxres code that runs, and whether its tree had uncommitted changes
    (``git_clean``; None for both where jaxres is not a git checkout, e.g. installed from a wheel)."""
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
