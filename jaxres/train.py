"""Train state, the pure train/eval steps, and their jit (one device) and pmap (data-parallel) forms.

``train_step`` and ``eval_step`` are written once. With ``axis_name`` set (under
``jax.pmap``), gradients and batch-norm statistics are averaged over the devices and the
metric sums are added up, so N devices with B/N examples each take exactly the step one
device takes with the whole batch B.

Metrics are returned as sums (``loss_sum``, ``correct``, ``count``) rather than means, so
batches of different sizes, padded evaluation batches and several devices all aggregate
exactly; ``jaxres.metrics`` turns them into means.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

PMAP_AXIS = "batch"
Batch = dict[str, Any]  # {"image": float NHWC, "label": int, optional "mask": float/bool}


class TrainState(train_state.TrainState):
    """flax TrainState plus the batch-norm running statistics (an empty dict without batch norm)."""

    batch_stats: Any = flax.core.FrozenDict()


def default_optimizer() -> optax.GradientTransformation:
    """The seed study's optimizer: Adam, lr 1e-3, betas 0.9/0.999."""
    return optax.adam(1e-3, b1=0.9, b2=0.999)


def create_train_state(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation | None = None) -> TrainState:
    """Initialise ``model`` for images of ``input_shape`` (H, W, C) and wrap it with ``tx``."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {tuple(input_shape)}")
    variables = model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", flax.core.FrozenDict()),
                             tx=tx or default_optimizer())


def _variables(state: TrainState, params: Any) -> dict[str, Any]:
    v = {"params": params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def _metric_sums(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def train_step(state: TrainState, batch: Batch, rng: jax.Array,
               axis_name: str | None = None) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One optimizer step on ``batch``; returns the new state and metric sums over the batch.

    The loss is the mean cross-entropy over the (global) batch. ``rng`` feeds stochastic
    layers (the "dropout" stream); under pmap each device folds in its index.
    """
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    images, labels = batch["image"], batch["label"]
    mutable = ["batch_stats"] if state.batch_stats else False

    def loss_fn(params):
        out = state.apply_fn(_variables(state, params), images, train=True, axis_name=axis_name,
                             mutable=mutable, rngs={"dropout": rng})
        logits, updates = out if mutable else (out, {})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates)

    grads, (logits, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    metrics = _metric_sums(logits, labels, jnp.ones(labels.shape, jnp.float32))
    if axis_name is not None:
        # Batch statistics need no averaging here: BatchNorm already averaged them over axis_name.
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.psum(metrics, axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)  # of the averaged gradient: the same on every device
    state = state.apply_gradients(grads=grads)
    if mutable:
        state = state.replace(batch_stats=updates["batch_stats"])
    return state, metrics


def eval_step(state: TrainState, batch: Batch, axis_name: str | None = None) -> dict[str, jnp.ndarray]:
    """Metric sums over the examples of ``batch`` whose ``mask`` is set (all, without a mask)."""
    images, labels = batch["image"], batch["label"]
    mask = batch.get("mask")
    mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    logits = state.apply_fn(_variables(state, state.params), images, train=False)
    metrics = _metric_sums(logits, labels, mask)
    return jax.lax.psum(metrics, axis_name) if axis_name is not None else metrics


# ------------------------------------------------------------------ one device / many devices
def jit_train_step(donate: bool = True) -> Callable:
    """``train_step`` compiled for one device; the old state's buffers are reused when ``donate``."""
    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def jit_eval_step() -> Callable:
    return jax.jit(eval_step)


def pmap_train_step(donate: bool = True) -> Callable:
    """``train_step`` replicated over the local devices: state replicated, batch split on axis 0."""
    return jax.pmap(functools.partial(train_step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
                    in_axes=(0, 0, None), donate_argnums=(0,) if donate else ())


def pmap_eval_step() -> Callable:
    return jax.pmap(functools.partial(eval_step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS)


def shard(batch: Batch, n_devices: int | None = None) -> Batch:
    """Reshape every array of ``batch`` from (B, ...) to (n_devices, B // n_devices, ...)."""
    n = n_devices or jax.local_device_count()

    def split(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by the device count {n}; "
                             f"use a batch size that is a multiple of {n}")
        return x.reshape((n, x.shape[0] // n, *x.shape[1:]))

    return jax.tree_util.tree_map(split, batch)


def replicate(tree: Any, devices: list | None = None) -> Any:
    """Copy ``tree`` to every local device (leading device axis), for pmap."""
    return flax.jax_utils.replicate(tree, devices)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated ``tree``."""
    return flax.jax_utils.unreplicate(tree)


# ------------------------------------------------------------------ the epoch loop
def fit(state: TrainState, data: Any, epochs: int, rng: jax.Array, checkpointer: Any = None,
        progress: bool = True, log: Callable[[str], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[TrainState, list[dict]]:
    """Train ``state`` on ``data`` (a ``jaxres.data.Dataset``) for ``epochs`` epochs; (state, history).

    ``rng`` is the run's root key: step k uses ``fold_in(rng, k)``. With a ``checkpointer``
    (``jaxres.checkpoint.Checkpointer``) the run resumes after the newest intact checkpoint
    and saves one at the end of every epoch; a finished run trains nothing. After each
    epoch the test split is evaluated, a row appended to the history and passed to
    ``on_epoch`` (metric writers). Train metrics are
    the running means over the epoch's steps, as Keras reports them. Uses pmap over
    ``data.n_devices`` devices when there are several. Returns the unreplicated state.
    """
    import time

    from tqdm import tqdm

    from jaxres import metrics as M

    log = log or tqdm.write
    history: list[dict] = []
    if checkpointer is not None:
        restored = checkpointer.restore_latest(state, rng)
        if restored is not None:
            state, rng, history = restored
            log(f"resuming after epoch {len(history)} from {checkpointer.run_dir}")
    if len(history) >= epochs:
        log(f"already trained for {len(history)} epochs: nothing to do")
        return state, history
    multi = data.n_devices > 1
    step_fn = pmap_train_step() if multi else jit_train_step()
    eval_fn = pmap_eval_step() if multi else jit_eval_step()
    if multi:
        state = replicate(state)
    try:
        for epoch in range(len(history), epochs):
            start = time.perf_counter()
            total = None
            bar = tqdm(data.train_batches(epoch), total=data.steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}",
                       leave=False, disable=not progress, unit="step")
            for i, batch in enumerate(bar):
                state, m = step_fn(state, batch, jax.random.fold_in(rng, epoch * data.steps_per_epoch + i))
                total = M.accumulate(total, m)
            train_m = M.summarize(total)
            test_total = None
            for batch in data.eval_batches("test"):
                test_total = M.accumulate(test_total, eval_fn(state, batch))
            test_m = M.summarize(test_total)
            row = {"epoch": epoch + 1, "train_loss": train_m["loss"], "train_accuracy": train_m["accuracy"],
                   "test_loss": test_m["loss"], "test_accuracy": test_m["accuracy"],
                   "grad_norm": train_m["grad_norm"], "train_examples": train_m["count"],
                   "test_examples": test_m["count"], "epoch_time_s": time.perf_counter() - start}
            history.append(row)
            log(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
                f"test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.4f} | {row['epoch_time_s']:.1f}s")
            if checkpointer is not None:
                checkpointer.save(unreplicate(state) if multi else state, rng, history)
            if on_epoch is not None:
                on_epoch(row)
    finally:
        if checkpointer is not None:
            checkpointer.wait()
    return (unreplicate(state) if multi else state), history
