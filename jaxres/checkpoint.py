"""Orbax checkpoints at the end of every epoch, exact resume, recovery from broken checkpoints,
and a per-run lock.

A run directory holds ``config.json`` (what the run is: ``jaxres.config.identity``) and
``checkpoints/<epoch>/``, each an orbax composite of

* ``state``: the TrainState pytree (step, params, optimizer state, batch stats);
* ``meta``: the epoch, the step and the per-epoch metrics history so far;

and ``manifests/<epoch>.json``, the sha256 of every file of that checkpoint, checked before it is
trusted (orbax does not notice every damaged data file, and reports some with hundreds of lines).

Nothing else is needed to resume exactly: the random streams derive from the config's seed
and the data order from (seed, epoch), and every epoch starts at its first batch.

The state is saved unreplicated, so a checkpoint written by a pmap run on N devices
restores on any device count. With several processes (``jax.distributed``) every process saves
and restores together (orbax), on a folder they share; process 0 alone writes ``config.json`` and
the manifests, and moves a broken checkpoint aside. Retention keeps the last ``keep`` checkpoints plus the best
by test accuracy, and the epochs named in ``keep_epochs`` (for probes after training); a checkpoint that fails
to restore is moved aside to ``checkpoints.broken/`` (never deleted) with a warning, and the previous one is used.

When to save inside an epoch, and how several processes agree on saving and stopping, is
``jaxres.stopping.SavePolicy`` (``Checkpointer.policy``); this module only stores.

``RunLock`` makes sure one process at a time trains a run: a second process on the same
folder is told which process holds it, and a lock left by a killed process is taken over.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxres.config import differences, flatten
from jaxres.results import write_json_atomic
from jaxres import errors
from jaxres.stopping import SavePolicy
from jaxres.errors import STOP_SIGNALS, CheckpointError, RunLocked, interrupt


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


# The longest path orbax writes below a run's checkpoints/ folder, with room to spare: about 60 characters
# (`1/state/ocdbt.process_0/d/<32 hex>`), more while a step is written under a temporary name.
DEEPEST_BELOW_CHECKPOINTS = 160
# In RUN/manifests/ of a run begun by this jaxres: each of its checkpoints has a manifest, so one without is untrusted.
MANIFESTED = ".every_checkpoint_has_one"


PARTIAL = "checkpoints.partial"  # the run folder's saves inside an epoch (the newest only)
UNVERIFIABLE = "it has no manifest (the process stopped between writing the two), so its files cannot be verified"


class Manifests:
    """The sha256 of every file of a run's checkpoints, in ``RUN/manifests/``: ``<epoch>.json`` for each epoch
    checkpoint, ``checkpoints.partial.json`` (naming its step) for the newest save inside an epoch. Written by
    process 0 after each save, checked before a checkpoint is trusted (``verify``), moved aside with it."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "manifests"

    def path(self, epoch: int | None) -> Path:
        """The manifest of epoch ``epoch``'s checkpoint; None: of the save inside an epoch."""
        return self.folder / (f"{PARTIAL}.json" if epoch is None else f"{epoch}.json")

    def begin(self) -> None:
        """A new run: every checkpoint of it gets a manifest, so one without is not trusted."""
        self.folder.mkdir(exist_ok=True)
        (self.folder / MANIFESTED).touch()

    def write(self, step_dir: Path, epoch: int | None, kept: list[int] = ()) -> None:
        """Hash the files of ``step_dir``: epoch ``epoch``'s checkpoint, dropping the manifests of epochs not in
        ``kept`` (pruned); or, with ``epoch`` None, the save inside an epoch (its step: ``step_dir``'s name)."""
        files = {str(p.relative_to(step_dir)): _sha256(p) for p in sorted(step_dir.rglob("*")) if p.is_file()}
        self.folder.mkdir(exist_ok=True)
        if epoch is None:
            write_json_atomic(self.path(None), {"step": int(step_dir.name), "files": files})
            return
        write_json_atomic(self.path(epoch), files)
        for old in self.folder.glob("*.json"):
            if old.stem not in {str(e) for e in kept}:
                old.unlink(missing_ok=True)

    def verify(self, step_dir: Path, epoch: int | None) -> None:
        """Raise if a file of the checkpoint in ``step_dir`` is missing or differs from what was written."""
        manifest = self.path(epoch)
        if epoch is None:  # a save inside an epoch is always written with its manifest
            got = json.loads(manifest.read_text()) if manifest.exists() else {}
            if got.get("step") != int(step_dir.name):
                raise ValueError(UNVERIFIABLE)
            files = got["files"]
        elif manifest.exists():
            files = json.loads(manifest.read_text())
        elif (self.folder / MANIFESTED).exists():  # a kill between the checkpoint and its manifest
            raise ValueError(UNVERIFIABLE)
        else:
            return  # a run begun by a jaxres without manifests: orbax's own checks only
        for name, digest in files.items():
            path = step_dir / name
            if not path.is_file():
                raise ValueError(f"{name} is missing")
            if _sha256(path) != digest:
                raise ValueError(f"{name} differs from what was written")


class Checkpointer:
    """Saves and restores one run's per-epoch checkpoints in ``run_dir``.

    ``config`` is a JSON-able description of the run (``jaxres.config.identity``); a run
    directory made with a different one is refused, never silently mixed. Use it as a context
    manager, or call ``close``.
    """

    def __init__(self, run_dir: str | Path, config: dict[str, Any], keep: int = 2, every_steps: int = 0,
                 every_minutes: float = 0.0, keep_epochs: tuple[int, ...] = ()):
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        if any(e < 1 for e in keep_epochs):
            raise CheckpointError(f"keep_epochs must be epochs from 1, got {', '.join(map(str, keep_epochs))}")
        self.policy = SavePolicy(every_steps, every_minutes)  # when to save inside an epoch, and stop agreement
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
            changed = differences(saved, self.config)
            if changed:
                flat_saved, flat_asked = flatten(saved), flatten(self.config)
                diff = "; ".join(f"{k}: {flat_saved.get(k)!r} there, {flat_asked.get(k)!r} asked" for k in changed)
                raise CheckpointError(f"{self.run_dir} holds a run with a different config ({diff}); "
                                      "use another output folder or remove that one")
        elif jax.process_index() == 0:
            write_json_atomic(config_path, self.config)
        self._keep, self._keep_epochs, self.manifests = keep, tuple(keep_epochs), Manifests(self.run_dir)
        self._check_writable(self.run_dir / "checkpoints")
        self._check_writable(self.run_dir / PARTIAL)  # the longer path, with global step numbers
        self._open()
        if not self.epochs() and jax.process_index() == 0:  # a new run: every checkpoint of it gets a manifest
            self.manifests.begin()

    def _check_writable(self, folder: Path) -> None:
        """Fail in one line, before training, where no checkpoint could be written: a folder that is read-only
        or full, or a path so long that the files orbax writes below it would pass the system's limit (orbax
        would time out in its background threads instead, minutes later)."""
        try:
            limit = os.pathconf(self.run_dir, "PC_PATH_MAX")
        except (OSError, ValueError):
            limit = 4096
        if len(str(folder)) + DEEPEST_BELOW_CHECKPOINTS >= limit:
            raise CheckpointError(f"{folder} is {len(str(folder))} characters long: the checkpoint files below it "
                                  f"would pass this system's limit of {limit} for a path; use a shorter --out")
        probe = folder / f".write_test.{socket.gethostname()}.{os.getpid()}"
        try:
            folder.mkdir(exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise CheckpointError(f"cannot write checkpoints in {folder} ({e.strerror}); "
                                  f"{_fix(e, folder, starting=True)}") from None

    def _open(self) -> None:
        # the best epoch: by validation accuracy where the run holds a validation split out, else by test accuracy
        best = lambda m: m.get("validation_accuracy", m["test_accuracy"])  # noqa: E731
        keep = [policies.LatestN(n=self._keep), policies.BestN(get_metric_fn=best, n=1)]
        keep += [policies.CustomSteps(steps=self._keep_epochs)] if self._keep_epochs else []  # kept for later probes
        policy = policies.AnyPreservationPolicy(keep)
        # best_fn as well: without it orbax keeps the metrics in memory only, so after a restart no
        # checkpoint has one, BestN ranks none, and nothing written before the restart is ever pruned.
        # Synchronous: every save is waited for anyway, and orbax's asynchronous path creates the folders in a
        # background thread that others wait on; when that creation fails (out of inodes) they wait 300 s and
        # print pages of tracebacks at exit.
        self.manager = ocp.CheckpointManager(
            self.run_dir / "checkpoints",
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=best, best_mode="max",
                                                 cleanup_tmp_directories=True, enable_async_checkpointing=False),
            item_names=("state", "meta"))
        # Inside an epoch: the newest save only, apart from the epoch checkpoints (so --keep and the best epoch
        # are untouched), numbered by the global step.
        self.partial = ocp.CheckpointManager(
            self.run_dir / PARTIAL, options=ocp.CheckpointManagerOptions(max_to_keep=1, cleanup_tmp_directories=True,
                                                                enable_async_checkpointing=False),
            item_names=("state", "carry", "meta"))

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - already failing: the first error is the one to report
            if exc_type is None:
                raise

    # ----------------------------------------------------------- save
    def save(self, state: Any, history: list[dict]) -> None:
        """Checkpoint the end of epoch ``len(history)``, and return once it is on disk, verified.

        Synchronous, so that a failed write (a full disk) is reported at the epoch it concerns and
        costs at most that epoch. A Ctrl-C during the write is held until the checkpoint is complete
        (a second one abandons it). The files are hashed into ``manifests/<epoch>.json``, which
        ``restore_latest`` checks before it trusts a checkpoint.
        """
        epoch = len(history)
        meta = {"epoch": epoch, "step": int(state.step), "history": history}
        with _interrupts_held(), quiet_orbax():
            try:
                self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                 meta=ocp.args.JsonSave(meta)),
                                  metrics={k: float(history[-1][k]) for k in ("test_accuracy", "validation_accuracy")
                                           if k in history[-1]}, force=True)
                self.manager.wait_until_finished()
                if jax.process_index() == 0:  # with several processes: the files are the same for all
                    self.manifests.write(Path(self.manager.directory) / str(epoch), epoch, self.epochs())
                self._drop_partial()  # the epoch is whole: the saves inside it are done with
            except Exception as e:  # noqa: BLE001 - any failure to write is reported as one
                _settle_orbax(self.run_dir)
                kept = [k for k in self.epochs() if k != epoch]
                after = (f"{_fix(e, self.manager.directory)}: it resumes after epoch {kept[-1]}" if kept
                         else "no earlier epoch of this run was saved")
                raise CheckpointError(f"cannot write checkpoint to {self.run_dir} ({_reason(e)}); {after}") from None
        self.policy.saved()  # the minutes between saves inside an epoch count from here too

    # ----------------------------------------------------------- inside an epoch
    def save_partial(self, state: Any, history: list[dict], done: int, carry: dict[str, Any]) -> None:
        """Save the state after step ``done`` of epoch ``len(history) + 1`` and what the epoch has gathered so far
        (``carry``: its metric sums and recorded layer norms, numpy arrays), so that a resume continues at the next
        step. Synchronous and verified like ``save``; only the newest such save is kept, beside the epochs'."""
        step = int(state.step)
        meta = {"epoch": len(history) + 1, "done": done, "step": step, "history": history}
        with _interrupts_held(), quiet_orbax():
            try:
                self.partial.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                carry=ocp.args.StandardSave(carry),
                                                                meta=ocp.args.JsonSave(meta)), force=True)
                self.partial.wait_until_finished()
                if jax.process_index() == 0:
                    self.manifests.write(Path(self.partial.directory) / str(step), None)
            except Exception as e:  # noqa: BLE001 - reported as one line; the epoch checkpoints are untouched
                _settle_orbax(self.run_dir)
                raise CheckpointError(f"cannot write a checkpoint inside epoch {len(history) + 1} to {self.run_dir} "
                                      f"({_reason(e)}); the epoch checkpoints are kept: "
                                      f"{_fix(e, self.partial.directory)}") from None
        self.policy.saved()

    def restore_partial(self, state: Any, epochs_done: int) -> tuple[Any, int, dict[str, Any]] | None:
        """(state, steps done, carry) of a save inside epoch ``epochs_done + 1``, shaped like ``state``; None if
        there is none. One left from an epoch that has since been saved whole is dropped; one that cannot be read
        or verified is moved to ``checkpoints.broken/`` with one warning line (the epoch resume is used)."""
        for step in reversed(sorted(self.partial.all_steps())):
            try:
                with quiet_orbax():
                    meta = self.partial.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                if meta["epoch"] != epochs_done + 1:
                    self._drop_partial()
                    return None
                self.manifests.verify(Path(self.partial.directory) / str(step), None)
                abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
                with quiet_orbax():
                    got = self.partial.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), carry=ocp.args.StandardRestore()))
                if int(got["state"].step) != meta["step"] or len(meta["history"]) != epochs_done:
                    raise ValueError(f"inconsistent contents (step {int(got['state'].step)} vs {meta['step']})")
                self.policy.saved()
                return got["state"], int(meta["done"]), got["carry"]
            except Exception as e:  # noqa: BLE001 - any failure to read means: resume from the epoch checkpoint
                moved = self._quarantine_partial(step)
                warnings.warn(f"the checkpoint inside epoch {epochs_done + 1} (step {step}) cannot be used "
                              f"({type(e).__name__}: {_reason(e)}); moved to {moved}; resuming from the start of "
                              "that epoch", stacklevel=2)
        return None

    def _drop_partial(self) -> None:
        for step in self.partial.all_steps():
            self.partial.delete(step)  # collective: every process calls it (a barrier), process 0 deletes
        if jax.process_index() == 0:
            self.manifests.path(None).unlink(missing_ok=True)

    def _quarantine_partial(self, step: int) -> Path:
        dst = self._move_aside(Path(self.partial.directory) / str(step), f"{PARTIAL}-{step}", self.manifests.path(None))
        self.partial.reload()
        return dst

    def wait(self) -> None:
        """Block until every save has reached the disk (saves are synchronous: nothing to wait for)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
        self.partial.close()

    # ----------------------------------------------------------- restore
    def epochs(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, state: Any) -> tuple[Any, list[dict]] | None:
        """(state, history) from the newest intact checkpoint, shaped like ``state``; None if there is none.

        A checkpoint that cannot be read, or whose files differ from its manifest, is moved to
        ``checkpoints.broken/`` with a one-line warning naming it, and the next older one is tried.
        """
        for epoch in reversed(self.epochs()):
            try:
                return self._restore(state, epoch)
            except Exception as e:  # noqa: BLE001 - any failure to read means: use an older checkpoint
                moved = self._quarantine(epoch)
                warnings.warn(f"checkpoint of epoch {epoch} in {self.run_dir / 'checkpoints'} cannot be used "
                              f"({type(e).__name__}: {_reason(e)}); moved to {moved}; trying the previous one",
                              stacklevel=2)
        return None

    def restore_epoch(self, state: Any, epoch: int) -> tuple[Any, list[dict]]:
        """(state, history) of the checkpoint of ``epoch`` (one of ``epochs()``), verified against its manifest; a
        CheckpointError in one line where it cannot be read. For readers (probes): nothing is moved aside."""
        try:
            return self._restore(state, epoch)
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise CheckpointError(f"checkpoint of epoch {epoch} in {self.run_dir / 'checkpoints'} cannot be used "
                                  f"({type(e).__name__}: {_reason(e)})") from None

    def _restore(self, state: Any, epoch: int) -> tuple[Any, list[dict]]:
        self.manifests.verify(Path(self.manager.directory) / str(epoch), epoch)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
        with quiet_orbax():
            restored = self.manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        meta, saved = restored["meta"], restored["state"]
        history = meta["history"]
        if meta["epoch"] != epoch or len(history) != epoch or int(saved.step) != meta["step"]:
            raise ValueError(f"inconsistent contents (epoch {meta['epoch']}, {len(history)} history rows, "
                             f"step {int(saved.step)} vs {meta['step']})")
        return saved, history

    def _quarantine(self, epoch: int) -> Path:
        dst = self._move_aside(Path(self.manager.directory) / str(epoch), str(epoch), self.manifests.path(epoch))
        self.manager.close()
        self._open()  # re-read the steps on disk
        return dst

    def _move_aside(self, src: Path, name: str, manifest: Path) -> Path:
        """Move a checkpoint that cannot be used, and its manifest, to ``checkpoints.broken/NAME-<time>`` (never
        deleted); process 0 moves it, the others read the same files and skip it too. Returns where it goes."""
        dst = self.run_dir / "checkpoints.broken" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.exists():
                shutil.move(str(src), str(dst))
            if manifest.exists():
                shutil.move(str(manifest), str(dst / "manifest.json") if dst.exists() else f"{dst}.manifest.json")
        if jax.process_count() > 1:  # the others re-read the folder once it has moved (orbax's deletes are collective)
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxres: {name} moved aside")
        return dst


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chain(e: BaseException | None) -> list[BaseException]:
    """``e`` and the exceptions it was raised from or while handling."""
    seen, chain = set(), []
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


UNWRITABLE = "permissions, a read-only mount, chattr -i"  # what makes a folder refuse new files
_CAUSES = {"room": ({errno.ENOSPC, errno.EDQUOT, errno.EFBIG},
                    ("No space left on device", "Disk quota exceeded", "File too large")),
           "permission": ({errno.EACCES, errno.EPERM, errno.EROFS},
                          ("Permission denied", "Operation not permitted", "Read-only file system"))}


def _cause(e: BaseException) -> str | None:
    """Why a write failed, for the advice: "room" (a full disk or quota, a file-size limit), "permission" (the
    folder refuses writes: permissions, a read-only mount, an immutable folder), or None (anything else)."""
    reason = _reason(e)
    for cause, (numbers, words) in _CAUSES.items():
        if any(getattr(err, "errno", None) in numbers for err in _chain(e)) or reason in words:
            return cause
    return None


def _fix(e: BaseException, folder: Any, starting: bool = False) -> str:
    """What to do after a failed write into ``folder``, by its cause; ``starting``: before a run trains (where
    another --out is a way out too)."""
    cause = _cause(e)
    if cause == "room":
        return "run the same command once there is room"
    if cause == "permission":
        return (f"make it writable ({UNWRITABLE}) or use another --out" if starting
                else f"make {folder} writable again ({UNWRITABLE}) and run the same command")
    return "run the same command once that is fixed"


def _reason(e: BaseException) -> str:
    """A short, whole-word reason for ``e``: the operating system's words where a system call failed."""
    chain = _chain(e)
    for err in chain:
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
    text = " ".join(str(err) for err in chain)
    for words in (w for _, known in _CAUSES.values() for w in known):
        if words.lower() in text.lower():
            return words
    first = next((str(err).splitlines()[0] for err in chain if str(err).strip()), type(chain[0]).__name__)
    return textwrap.shorten(first, 160, placeholder=" ...")


@contextlib.contextmanager
def quiet_orbax():
    """Keep orbax's own reports of a failed read or write off the terminal while the block runs: pages of
    tracebacks logged from its threads (absl) and printed by tensorstore callbacks that reach an event
    loop orbax has closed. jaxres reports such a failure itself, in one line."""
    absl, level, previous = logging.getLogger("absl"), logging.getLogger("absl").level, sys.unraisablehook
    absl.setLevel(logging.CRITICAL)
    sys.unraisablehook = _without_closed_loop_reports(previous)
    try:
        yield
    finally:
        absl.setLevel(level)
        if not _SILENCED:  # after a failed write, late callbacks stay quiet for the rest of the process
            sys.unraisablehook = previous


def _without_closed_loop_reports(hook):
    """``hook`` without the reports of tensorstore callbacks that reach an event loop orbax has closed (printed
    as a bare traceback: they name no object)."""
    if getattr(hook, "drops_closed_loop_reports", False):
        return hook

    def quiet(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
            hook(unraisable)

    quiet.drops_closed_loop_reports = True
    return quiet


_SILENCED: set[str] = set()


def _settle_orbax(run_dir: Path, timeout: float = 10.0) -> None:
    """After a failed write, called inside ``quiet_orbax``: give orbax's background threads (which may still be
    failing on the same files) a few seconds to end while their reports are kept quiet, and keep any report
    they log later about ``run_dir`` off the terminal, as well as what a failed write leaves for the end of the
    process: tensorstore callbacks that reach orbax's closed event loop (``quiet_orbax``) and the warnings about
    orbax's writes that were never started. jaxres has reported the failure in one line."""
    if str(run_dir) not in _SILENCED:
        _SILENCED.add(str(run_dir))
        logging.getLogger("absl").addFilter(lambda record, d=str(run_dir): d not in record.getMessage())
        never_started = dict(message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
        warnings.filterwarnings("ignore", **never_started)
        atexit.register(warnings.filterwarnings, "ignore", **never_started)  # also where a caller restores filters
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t is not threading.current_thread() and type(t).__module__.startswith("orbax"):
            threading.Thread.join(t, max(0.0, deadline - time.monotonic()))  # not orbax's join, which re-raises


@contextlib.contextmanager
def _interrupts_held():
    """Hold a Ctrl-C (SIGINT) or a stop signal until the block is done, then raise it; a second Ctrl-C raises
    at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []

    def hold(signum, frame):
        if pending and signum == signal.SIGINT:
            raise interrupt(pending[0])
        if not pending:
            pending.append(signum)
            what = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
            again = " (Ctrl-C again to abandon it)" if signum == signal.SIGINT else ""
            errors.say(f"{what}: finishing the checkpoint being written{again}")

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if pending and errors.deferring():  # training stops at its next step boundary (errors.stops_at_step_boundaries)
        errors.defer(pending[0])
    elif pending:
        raise interrupt(pending[0])
