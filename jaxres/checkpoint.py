"""Orbax checkpoints at the end of every epoch, exact resume, recovery from broken checkpoints,
and a per-run lock.

A run directory holds ``config.json`` (what the run is: ``jaxres.config.identity``) and
``checkpoints/<epoch>/``, each an orbax composite of

* ``state``: the TrainState pytree (step, params, optimizer state, batch stats);
* ``meta``: the epoch, the step and the per-epoch metrics history so far.

Nothing else is needed to resume exactly: the random streams derive from the config's seed
and the data order from (seed, epoch), and every epoch starts at its first batch.

The state is saved unreplicated, so a checkpoint written by a pmap run on N devices
restores on any device count. Retention keeps the last ``keep`` checkpoints plus the best
by test accuracy; a checkpoint that fails to restore is moved aside to
``checkpoints.broken/`` (never deleted) with a warning, and the previous one is used.

``RunLock`` makes sure one process at a time trains a run: a second process on the same
folder is told which process holds it, and a lock left by a killed process is taken over.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxres.config import flatten


class CheckpointError(ValueError):
    """A run directory cannot be used as asked: the message says why and what to do."""


class RunLocked(CheckpointError):
    """Another live process is training this run."""


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that ``path`` is always either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False))
    tmp.replace(path)


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``RUN/.lock``), held while the run trains.

    The kernel drops a ``flock`` when its process dies, however it dies, so a lock left by a
    killed process is simply free: the next process takes it over and says so. The file names
    the holder (pid, host, start time) for the message a second process gets.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None
        self.took_over: str | None = None  # the holder recorded in a lock left behind, if any

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path.parent.name} is being trained by {holder}; skipped") from None
        left = os.read(fd, 200).decode(errors="replace").strip()
        self.took_over = left or None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty file: released cleanly (a non-empty free one was left behind)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Checkpointer:
    """Saves and restores one run's per-epoch checkpoints in ``run_dir``.

    ``config`` is a JSON-able description of the run (``jaxres.config.identity``); a run
    directory made with a different one is refused, never silently mixed. Use it as a context
    manager, or call ``close``.
    """

    def __init__(self, run_dir: str | Path, config: dict[str, Any], keep: int = 2):
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        self.run_dir = Path(run_dir).absolute()
        self.config = json.loads(json.dumps(config))  # as it will read back
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / "config.json"
        if config_path.exists():
            try:
                saved = json.loads(config_path.read_text())
            except ValueError:
                raise CheckpointError(f"{config_path} is damaged (not JSON); if the run is yours, delete "
                                      f"{self.run_dir} to start it again") from None
            if saved != self.config:
                flat_saved, flat_asked = flatten(saved), flatten(self.config)
                diff = "; ".join(f"{k}: {flat_saved.get(k)!r} there, {flat_asked.get(k)!r} asked"
                                 for k in _diff(flat_saved, flat_asked))
                raise CheckpointError(f"{self.run_dir} holds a run with a different config ({diff}); "
                                      "use another output folder or remove that one")
        else:
            write_json_atomic(config_path, self.config)
        self._keep = keep
        self._open()

    def _open(self) -> None:
        policy = policies.AnyPreservationPolicy([
            policies.LatestN(n=self._keep),
            policies.BestN(get_metric_fn=lambda m: m["test_accuracy"], n=1),
        ])
        self.manager = ocp.CheckpointManager(
            self.run_dir / "checkpoints",
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, cleanup_tmp_directories=True),
            item_names=("state", "meta"))

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------- save
    def save(self, state: Any, history: list[dict]) -> None:
        """Checkpoint the end of epoch ``len(history)`` (asynchronously; see ``wait``)."""
        epoch = len(history)
        meta = {"epoch": epoch, "step": int(state.step), "history": history}
        self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)),
                          metrics={"test_accuracy": float(history[-1]["test_accuracy"])})

    def wait(self) -> None:
        """Block until every save has reached the disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    # ----------------------------------------------------------- restore
    def epochs(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, state: Any) -> tuple[Any, list[dict]] | None:
        """(state, history) from the newest intact checkpoint, shaped like ``state``; None if there is none.

        A checkpoint that cannot be read is moved to ``checkpoints.broken/`` with a warning
        naming it, and the next older one is tried.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
        for epoch in reversed(self.epochs()):
            try:
                restored = self.manager.restore(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                meta, saved = restored["meta"], restored["state"]
                history = meta["history"]
                if meta["epoch"] != epoch or len(history) != epoch or int(saved.step) != meta["step"]:
                    raise ValueError(f"inconsistent contents (epoch {meta['epoch']}, {len(history)} history rows, "
                                     f"step {int(saved.step)} vs {meta['step']})")
                return saved, history
            except Exception as e:  # noqa: BLE001 - any failure to read means: use an older checkpoint
                moved = self._quarantine(epoch)
                warnings.warn(f"checkpoint of epoch {epoch} in {self.run_dir / 'checkpoints'} is unreadable "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                              f"skipped and moved to {moved}; trying the previous one", stacklevel=2)
        return None

    def _quarantine(self, epoch: int) -> Path:
        src = Path(self.manager.directory) / str(epoch)
        dst = self.run_dir / "checkpoints.broken" / f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            shutil.move(str(src), str(dst))
        self.manager.close()
        self._open()  # re-read the steps on disk
        return dst
