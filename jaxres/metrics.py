"""Metric accumulation over an epoch, and TensorBoard event files (the per-layer norms' file: ``jaxres.results``).

Steps return metric *sums* (``loss_sum``, ``correct``, ``count``) plus per-step values such as
``grad_norm``, ``nonfinite_steps`` (0 or 1) and ``first_nonfinite_step``. ``accumulate`` adds
them on the device (the first non-finite step is a minimum; no host sync per step);
``summarize`` fetches once and turns them into means.
"""
from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MINIMA = ("first_nonfinite_step",)   # accumulated as a minimum, reported as is
TOTALS = ("nonfinite_steps",)        # accumulated as a sum, reported as is


def accumulate(total: dict[str, jax.Array] | None, step_metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Add one step's metrics to the running ``total`` (None to start); counts the steps. One compiled call
    per step (an eager operation per metric cost milliseconds each: a tenth of a small step)."""
    if total is None:
        return dict(step_metrics, steps=jnp.ones((), jnp.float32))
    return _add(total, step_metrics)


@jax.jit
def _add(total: dict[str, jax.Array], step_metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    step_metrics = dict(step_metrics, steps=jnp.ones_like(total["steps"]))
    return {k: (jnp.minimum if k in MINIMA else jnp.add)(total[k], v) for k, v in step_metrics.items()}


def host_value(x: Any) -> np.ndarray:
    """``x`` as a numpy array on this host; for a global array that spans several processes, this
    process's first shard (the whole value when it is replicated)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


def summarize(total: dict[str, Any]) -> dict[str, float]:
    """Means from accumulated sums: loss and accuracy per example, other values per step.

    Accepts replicated totals (pmap, or global arrays of the sharded-jit path on several processes):
    the sums are identical on every device, so this process's first copy is taken.
    """
    total = {k: float(host_value(v).reshape(-1)[0]) for k, v in total.items()}
    count = total.pop("count")
    if count <= 0:
        raise ValueError("no examples were seen: the split is empty or smaller than one batch")
    out = {"loss": total.pop("loss_sum") / count, "accuracy": total.pop("correct") / count, "count": int(count)}
    out.update({k: total.pop(k) for k in MINIMA + TOTALS if k in total})
    steps = total.pop("steps", 0.0)
    out.update({k: v / steps for k, v in total.items() if steps})
    return out


def _import_summary_writer():
    """tensorboardX's SummaryWriter, without the import of all of PyTorch (2 s) that tensorboardX makes,
    where it is installed, to recognise its tensors: jaxres writes Python floats."""
    import sys

    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` fail for this import only
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    # a diverged run's last values are NaN: the run's own line says so, not one tensorboardX line per value
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    return SummaryWriter


class TensorBoardWriter:
    """Per-epoch scalars, per-step training loss and learning rate (``steps``) and per-layer norms as TensorBoard event
    files (tensorboardX), or nothing with a note if it is absent."""

    def __init__(self, logdir: str, log=print):
        try:
            SummaryWriter = _import_summary_writer()
        except ImportError:
            log(f"note: tensorboardX is not installed, so no TensorBoard event files are written to {logdir}")
            self._writer = None
            return
        self._writer = SummaryWriter(logdir)

    def __call__(self, row: dict) -> None:
        if self._writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                split, _, name = key.partition("_")
                tag = f"{name}/{split}" if split in ("train", "test") else key
                self._writer.add_scalar(tag, value, row["epoch"])
        self._writer.flush()

    def steps(self, first: int, values: dict[str, Any]) -> None:
        """Per-step scalars from run step ``first`` on (0-based), as ``step/<name>``; non-finite values are left
        out (a diverged run's own line says where it diverged)."""
        if self._writer is None:
            return
        for name, series in values.items():
            for i, value in enumerate(np.asarray(series, np.float64)):
                if np.isfinite(value):
                    self._writer.add_scalar(f"step/{name}", float(value), first + i)
        self._writer.flush()

    def layer_norms(self, names: tuple[str, ...], norms: Any) -> None:
        """Per-layer gradient norms and update/parameter ratios at the recorded steps."""
        if self._writer is None:
            return
        for i, step in enumerate(norms.steps):
            for j, name in enumerate(names):
                self._writer.add_scalar(f"layer_grad_norm/{name}", float(norms.grad[i, j]), int(step))
                ratio = norms.update[i, j] / norms.param[i, j] if norms.param[i, j] > 0 else float("nan")
                self._writer.add_scalar(f"layer_update_ratio/{name}", float(ratio), int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
