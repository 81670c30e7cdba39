"""Orbax checkpoints at the end of every epoch, exact resume, and recovery from broken checkpoints.

A run directory holds ``config.json`` (what the run is) and ``checkpoints/<epoch>/``, each
an orbax composite of

* ``state``: the TrainState pytree (step, params, optimizer state, batch stats) and the
  run's root RNG key (its raw key data);
* ``meta``: the epoch, the data position (the next epoch starts at step 0 of its
  seeded order) and the per-epoch metrics history so far.

The state is saved unreplicated, so a checkpoint written by a pmap run on N devices
restores on any device count. Retention keeps the last ``keep`` checkpoints plus the best
by test accuracy; a checkpoint that fails to restore is moved aside to
``checkpoints.broken/`` (never deleted) with a warning, and the previous one is used.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class CheckpointError(ValueError):
    """A run directory cannot be used as asked: the message says why and what to do."""


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class Checkpointer:
    """Saves and restores one run's per-epoch checkpoints in ``run_dir``.

    ``config`` is a JSON-able description of the run (model, data, optimizer, seed, ...);
    a run directory made with a different one is refused, never silently mixed.
    """

    def __init__(self, run_dir: str | Path, config: dict[str, Any], keep: int = 2):
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        self.run_dir = Path(run_dir).absolute()
        self.config = json.loads(json.dumps(config))  # as it will read back
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / "config.json"
        if config_path.exists():
            saved = json.loads(config_path.read_text())
            if saved != self.config:
                diff = "; ".join(f"{k}: {saved.get(k)!r} there, {self.config.get(k)!r} asked"
                                 for k in _diff(saved, self.config))
                raise CheckpointError(f"{self.run_dir} holds a run with a different config ({diff}); "
                                      "use another output folder or remove that one")
        else:
            config_path.write_text(json.dumps(self.config, indent=2, sort_keys=True))
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

    # ----------------------------------------------------------- save
    def save(self, state: Any, rng: jax.Array, history: list[dict]) -> None:
        """Checkpoint the end of epoch ``len(history)`` (asynchronously; see ``wait``)."""
        epoch = len(history)
        meta = {"epoch": epoch, "step": int(state.step), "data_position": {"epoch": epoch, "step_in_epoch": 0},
                "history": history}
        self.manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"train_state": state, "rng": jax.random.key_data(rng)}),
            meta=ocp.args.JsonSave(meta)), metrics={"test_accuracy": float(history[-1]["test_accuracy"])})

    def wait(self) -> None:
        """Block until every save has reached the disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    # ----------------------------------------------------------- restore
    def epochs(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, state: Any, rng: jax.Array) -> tuple[Any, jax.Array, list[dict]] | None:
        """(state, rng, history) from the newest intact checkpoint, shaped like ``state``; None if there is none.

        A checkpoint that cannot be read is moved to ``checkpoints.broken/`` with a warning
        naming it, and the next older one is tried.
        """
        target = {"train_state": state, "rng": jax.random.key_data(rng)}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        for epoch in reversed(self.epochs()):
            try:
                restored = self.manager.restore(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                meta, saved = restored["meta"], restored["state"]
                history = meta["history"]
                if meta["epoch"] != epoch or len(history) != epoch or int(saved["train_state"].step) != meta["step"]:
                    raise ValueError(f"inconsistent contents (epoch {meta['epoch']}, {len(history)} history rows, "
                                     f"step {int(saved['train_state'].step)} vs {meta['step']})")
                key = jax.random.wrap_key_data(np.asarray(saved["rng"]), impl=jax.random.key_impl(rng))
                return saved["train_state"], key, history
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
