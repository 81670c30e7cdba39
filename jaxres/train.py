"""Train state, the pure train/eval steps, their jit (one device), sharded-jit (a device mesh of every
process) and pmap (this process's devices) forms, and the epoch loop.

``train_step`` and ``eval_step`` are written once. With ``axis_name`` set (under ``jax.pmap``,
or ``jax.shard_map`` inside the sharded jit program), gradients and batch-norm statistics are
averaged over the devices and the metric sums are added up, so N devices with B/N examples each
take exactly the step one device takes with the whole batch B.

Metrics are returned as sums (``loss_sum``, ``correct``, ``count``) rather than means, so
batches of different sizes, padded evaluation batches and several devices all aggregate
exactly; ``jaxres.metrics`` turns them into means. Each step also reports whether its loss or
gradient was non-finite, on the device: ``fit`` looks once per epoch and stops a run that
diverged (no host sync per step).

Per-layer monitoring (``layer_norms_every=N``): every N-th step also returns, computed on the
device inside the same compiled step (no second backward pass), the L2 norm of each layer's
gradient, of its parameters before the update and of the update, for the layers of
``layer_names`` (network order); the other steps skip that work (``lax.cond``). ``train_epoch``
keeps the per-step device arrays and fetches them once at the end of the epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxres import config, errors, stopping
from jaxres import metrics as M

PMAP_AXIS = "batch"     # the data-parallel axis: pmap's axis name and the mesh axis of the sharded-jit path
PARALLEL = config.PARALLEL
Batch = dict[str, Any]  # {"image": float NHWC, "label": int, optional "mask": float/bool}
NO_STEP = 2**31 - 1     # "no non-finite step yet" in the first_nonfinite_step metric


class TrainState(train_state.TrainState):
    """flax TrainState plus the batch-norm running statistics (an empty dict without batch norm), and
    the model's layers in network order (static; ``layer_names``)."""

    batch_stats: Any = flax.core.FrozenDict()
    layers: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


@dataclasses.dataclass(frozen=True)
class Streams:
    """A run's random streams, all from one root key: ``jax.random.split(key(seed), 4)``.

    ``init`` initialises the model; ``step`` feeds stochastic layers (step k folds in k);
    ``augment`` draws the data augmentation (epoch e, step k fold in e, then k); ``order`` seeds
    the training order of every epoch (``order_seed``). No two of them share a key.
    """

    init: jax.Array
    step: jax.Array
    augment: jax.Array
    order: jax.Array

    @classmethod
    def from_seed(cls, seed: int) -> Streams:
        return cls(*jax.random.split(jax.random.key(seed), 4))

    @property
    def order_seed(self) -> int:
        return int(jax.random.bits(self.order, dtype=jnp.uint32))


def create_train_state(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation | None = None) -> TrainState:
    """Initialise ``model`` for images of ``input_shape`` (H, W, C) and wrap it with ``tx``
    (default: the seed study's Adam, ``jaxres.optim.make_optimizer`` of the default config)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {tuple(input_shape)}")
    if tx is None:
        from jaxres import optim

        tx = optim.make_optimizer(config.RunConfig())
    variables = _init_variables(model, rng, tuple(input_shape))
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", flax.core.FrozenDict()), tx=tx,
                             layers=layer_names(model, variables["params"], tuple(input_shape)))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_variables(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]) -> Any:
    """The model's variables, compiled once per (model, input shape): initialising op by op, or compiling
    afresh for every run of a study, costs seconds (the init runs a forward pass)."""
    return model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)


def _variables(state: TrainState, params: Any) -> dict[str, Any]:
    v = {"params": params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def _metric_sums(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def layer_names(model: nn.Module, params: Any, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The layers of ``model`` in network order, e.g. ``("stem", "stage0_block0/conv0", ..., "head")``:
    the modules that own parameters (kernel, bias, scale), in the order a forward pass calls them
    (traced once, abstractly; parameter trees themselves come back from jit with sorted keys)."""
    owners = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        owners.add("/".join(str(getattr(k, "key", k)) for k in path[:-1]))
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        name = "/".join(context.module.path)
        if context.method_name == "__call__" and name in owners and name not in order:
            order.append(name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                       jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    # the rest (modules Linen's interceptor does not see: an NNX network behind flax.nnx.bridge) by name, numbers as
    # numbers ("convs/2" before "convs/10")
    return tuple(order) + tuple(sorted(owners - set(order), key=lambda n: [(0, int(p)) if p.isdigit() else (1, p)
                                                                            for p in n.split("/")]))


def per_layer_norms(tree: Any, names: list[str]) -> jnp.ndarray:
    """The L2 norm over all parameters of each layer in ``names``, as one float32 vector."""
    def layer(name: str) -> jnp.ndarray:
        node = tree
        for part in name.split("/"):
            node = node[part] if part in node else node[int(part)]  # NNX's lists key their layers by int
        leaves = [v for v in node.values() if not isinstance(v, dict)]
        return jnp.sqrt(sum(jnp.sum(jnp.square(v.astype(jnp.float32))) for v in leaves))

    return jnp.stack([layer(n) for n in names])


def _layer_norm_metrics(old: TrainState, new: TrainState, grads: Any, every: int) -> dict[str, jnp.ndarray]:
    """A step's per-layer gradient, parameter and update norms (computed on every ``every``-th step only)."""
    names = list(old.layers)
    if not names:
        raise ValueError("layer norms need the layer order: make the state with create_train_state")
    recorded = old.step % every == 0

    def norms(_):
        update = jax.tree.map(jnp.subtract, new.params, old.params)
        return jnp.stack([per_layer_norms(t, names) for t in (grads, old.params, update)])

    return {"layer_norms": jax.lax.cond(recorded, norms, lambda _: jnp.zeros((3, len(names))), None),
            "layer_norms_step": old.step.astype(jnp.int32), "layer_norms_recorded": recorded.astype(jnp.int32)}


def train_step(state: TrainState, batch: Batch, rng: jax.Array, axis_name: str | None = None,
               layer_norms_every: int = 0) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One optimizer step on ``batch``; returns the new state and metric sums over the batch.

    The loss is the mean cross-entropy over the (global) batch. ``rng`` is the step stream
    (``Streams.step``): the step folds in its own index, and under pmap each device its index,
    for stochastic layers (the "dropout" collection). With ``layer_norms_every=N`` > 0 the metrics
    also hold ``layer_norms`` (3 x layers: gradient, parameter and update norms, the order of
    ``LayerNorms``'s fields), ``layer_norms_step`` (this step's index) and ``layer_norms_recorded`` (1 on
    every N-th step, whose norms are computed; 0 elsewhere, norms left zero).
    """
    rng = jax.random.fold_in(rng, state.step)
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
    bad = ~(jnp.isfinite(metrics["loss_sum"]) & jnp.isfinite(metrics["grad_norm"]))
    metrics["nonfinite_steps"] = bad.astype(jnp.float32)
    metrics["first_nonfinite_step"] = jnp.where(bad, state.step + 1, NO_STEP).astype(jnp.int32)
    old = state
    state = state.apply_gradients(grads=grads)
    if layer_norms_every > 0:
        metrics.update(_layer_norm_metrics(old, state, grads, layer_norms_every))
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
def jit_train_step(donate: bool = True, layer_norms_every: int = 0) -> Callable:
    """``train_step`` compiled for one device; the old state's buffers are reused when ``donate``."""
    return jax.jit(functools.partial(train_step, layer_norms_every=layer_norms_every),
                   donate_argnums=(0,) if donate else ())


def jit_eval_step() -> Callable:
    return jax.jit(eval_step)


def pmap_train_step(donate: bool = True, devices: list | None = None, layer_norms_every: int = 0) -> Callable:
    """``train_step`` replicated over ``devices`` (default: all local ones): state replicated, batch split
    on axis 0."""
    return jax.pmap(functools.partial(train_step, axis_name=PMAP_AXIS, layer_norms_every=layer_norms_every),
                    axis_name=PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=(0,) if donate else (),
                    devices=devices)


def pmap_eval_step(devices: list | None = None) -> Callable:
    return jax.pmap(functools.partial(eval_step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS, devices=devices)


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis device mesh (``PMAP_AXIS``) over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), (PMAP_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch axis split over the mesh; the rest of each array whole."""
    return NamedSharding(mesh, P(PMAP_AXIS))


def sharded_train_step(mesh: Mesh, donate: bool = True, layer_norms_every: int = 0) -> Callable:
    """``train_step`` as one ``jax.jit`` program over ``mesh``: the batch sharded on its first axis
    (``batch_sharding``), the state and the metrics replicated (``place``).

    Inside, ``jax.shard_map`` runs the same per-device step as pmap (``axis_name``: gradients, batch
    statistics and metric sums averaged or added over the mesh), rather than leaving the split to
    XLA's automatic partitioner, which cannot split the oneDNN custom call (it would gather the whole
    batch onto every device). Works on every device of every process (``jax.distributed``).
    """
    step = jax.shard_map(functools.partial(train_step, axis_name=PMAP_AXIS, layer_norms_every=layer_norms_every),
                         mesh=mesh, in_specs=(P(), P(PMAP_AXIS), P()), out_specs=(P(), P()), check_vma=False)
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def sharded_eval_step(mesh: Mesh) -> Callable:
    return jax.jit(jax.shard_map(functools.partial(eval_step, axis_name=PMAP_AXIS), mesh=mesh,
                                 in_specs=(P(), P(PMAP_AXIS)), out_specs=P(), check_vma=False))


def place(tree: Any, mesh: Mesh) -> Any:
    """``tree`` (the same values on every process) as global arrays replicated over ``mesh``."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        value = np.asarray(jax.device_get(x) if not isinstance(x, jax.Array) or x.is_fully_addressable
                           else x.addressable_data(0))
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(put, tree)


def replicate(tree: Any, devices: list | None = None) -> Any:
    """Copy ``tree`` to every local device (leading device axis), for pmap."""
    return flax.jax_utils.replicate(tree, devices)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated ``tree``."""
    return flax.jax_utils.unreplicate(tree)


# ------------------------------------------------------------------ the epoch loop
class BatchSource(Protocol):
    """What ``fit`` needs of a dataset (``jaxres.data.Dataset``)."""

    n_devices: int                      # devices of this process
    process_count: int

    def set_sharding(self, sharding: Any) -> Any: ...

    @property
    def steps_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, rng: jax.Array | None = None, start: int = 0) -> Iterator[Batch]: ...

    def eval_batches(self, split: str = "test") -> Iterator[Batch]: ...


class CheckpointStore(Protocol):
    """What ``fit`` needs of a checkpointer (``jaxres.checkpoint.Checkpointer``)."""

    run_dir: Any

    def restore_latest(self, state: TrainState) -> tuple[TrainState, list[dict]] | None: ...

    def save(self, state: TrainState, history: list[dict]) -> None: ...

    def wait(self) -> None: ...

    # inside an epoch (optional: a store without these saves whole epochs only). ``policy`` is a
    # ``jaxres.stopping.SavePolicy``: when to save inside an epoch, and the processes' stop agreement
    policy: Any

    def save_partial(self, state: TrainState, history: list[dict], done: int, carry: dict[str, Any]) -> None: ...

    def restore_partial(self, state: TrainState, epochs_done: int) -> tuple[TrainState, int, dict] | None: ...


class FitResult(NamedTuple):
    state: TrainState                   # unreplicated
    history: list[dict]                 # one row per epoch
    diverged: dict[str, int] | None     # {"epoch", "step"} of the first non-finite loss or gradient
    stopped_early: dict[str, Any] | None = None  # {"epoch", "best_epoch", "patience"} where early stopping ended it


class LayerNorms(NamedTuple):
    """Per-layer norms of the recorded steps: ``steps`` (S,), and (S, layers) arrays."""
    steps: np.ndarray
    grad: np.ndarray
    param: np.ndarray
    update: np.ndarray


def _layer_norms(per_step: list[dict[str, jax.Array]]) -> LayerNorms | None:
    """The recorded steps of an epoch's per-step outputs, fetched from the device at once."""
    if not per_step:
        return None
    got = [{k: M.host_value(v) for k, v in g.items()} for g in per_step]
    rows = []
    for g in got:
        rec, step, norms = (np.asarray(g[k]) for k in ("layer_norms_recorded", "layer_norms_step", "layer_norms"))
        if rec.ndim:  # pmap: identical on every device (averaged gradients, replicated parameters)
            rec, step, norms = rec[0], step[0], norms[0]
        if rec:
            rows.append((int(step), norms))
    steps = np.array([r[0] for r in rows], np.int64)
    n_layers = np.shape(got[0]["layer_norms"])[-1]
    stacked = np.stack([r[1] for r in rows]) if rows else np.zeros((0, 3, n_layers), np.float32)
    return LayerNorms(steps, *(stacked[:, i] for i in range(3)))


def train_epoch(state: TrainState, step_fn: Callable, data: BatchSource, epoch: int, streams: Streams,
                desc: str = "", progress: bool = True, start: int = 0, carry: dict[str, Any] | None = None,
                save: Callable[[TrainState, int, dict[str, Any]], None] | None = None,
                agree: Callable[[int, bool, int | None], tuple[bool, int | None]] | None = None,
                time_first: bool = False, on_steps: Callable[[int, np.ndarray], None] | None = None,
                ) -> tuple[TrainState, dict[str, float], LayerNorms | None]:
    """One pass over ``epoch``'s training batches; (state, means of the step metrics, the per-layer
    norms of its recorded steps where the step function records them, else None).

    ``start`` and ``carry``: resume after step ``start`` of the epoch with what its first steps gathered
    (``carry_of``). After each step ``agree(steps done, not the last, this process's stop signal)`` says whether
    to save (``save(state, steps done, carry)``) and whether to stop (``SavePolicy.agree``, ``jaxres.stopping``); without it, a stop
    asked for (``jaxres.errors``) is raised at once. ``time_first``: time the first step, its compilation included
    (the metrics' ``first_step_s``; one wait for the device, else None). ``on_steps(first, losses)``: each step's
    mean training loss, from run step ``first`` on (0-based over the run), after each save and at the epoch's end
    (``_StepLosses``)."""
    from tqdm import tqdm

    total, layers, carried = None, [], None
    if carry is not None:
        total = {k: np.asarray(v) for k, v in carry["sums"].items()}
        carried = LayerNorms(*(np.asarray(carry["layers"][k]) for k in LayerNorms._fields)) if "layers" in carry else None
    bar = tqdm(initial=start, total=data.steps_per_epoch, desc=desc, leave=False, disable=not progress, unit="step")
    shown = _Postfix(bar, total) if progress else None
    first_step_s, began = None, time.perf_counter()
    losses = _StepLosses(on_steps, epoch * data.steps_per_epoch + start)
    finished = _Finished(bar)
    for done, batch in enumerate(data.train_batches(epoch, streams.augment, start=start), start + 1):
        state, m = step_fn(state, batch, streams.step)
        finished.dispatched(m["count"])
        losses.add(m)
        if time_first and first_step_s is None:  # the step's compilation included: one wait, in the first epoch
            jax.block_until_ready(m)
            first_step_s = time.perf_counter() - began
        if "layer_norms" in m:  # kept on the device until the epoch ends
            layers.append({k: m.pop(k) for k in ("layer_norms", "layer_norms_step", "layer_norms_recorded")})
        total = M.accumulate(total, m)
        save_now, stop = (agree(done, done < data.steps_per_epoch, errors.pending_stop()) if agree is not None
                          else (False, errors.pending_stop()))
        if save_now and save is not None:
            save(state, done, carry_of(total, _join(carried, _layer_norms(layers))))
            losses.flush()
        if stop is not None:  # with several processes a stop asked for waits for their next agreement
            errors.raise_if_stopped()
        if shown is not None:
            shown(total)
    finished.all()
    bar.close()
    losses.flush()
    return state, {**M.summarize(total), "first_step_s": first_step_s}, _join(carried, _layer_norms(layers))


class _Finished:
    """The progress bar counts steps done, not dispatched: after dispatching a step, wait for the one before it
    (one step stays queued, so the device never waits for the host) and advance the bar. JAX would otherwise let
    the host run many steps ahead, and the bar with it (issue 49: 6/24 at 4 s, then 9 to 14 in one second).
    Costs one wait on a scalar a step: measured in docs/training.md."""

    def __init__(self, bar):
        self.bar, self.queued = bar, None

    def dispatched(self, marker: jax.Array) -> None:
        if self.queued is not None:
            jax.block_until_ready(self.queued)
            self.bar.update(1)
        self.queued = marker

    def all(self) -> None:
        if self.queued is not None:
            jax.block_until_ready(self.queued)
            self.bar.update(1)
            self.queued = None


class _StepLosses:
    """Each step's mean training loss for ``on_steps``: kept on the device (two scalars a step) and fetched at each
    ``flush``, so that no step waits for the host. Flushed after each save inside an epoch: a run killed between
    a flush and its next save repeats those steps when it resumes, and hands them to ``on_steps`` again."""

    def __init__(self, on_steps: Callable[[int, np.ndarray], None] | None, first: int):
        self.on_steps, self.first, self.kept = on_steps, first, []

    def add(self, m: dict[str, jax.Array]) -> None:
        if self.on_steps is not None:
            self.kept.append((m["loss_sum"], m["count"]))

    def flush(self) -> None:
        if not self.kept:
            return
        got = np.array([[M.host_value(x).reshape(-1)[0] for x in pair] for pair in self.kept], np.float64)
        self.on_steps(self.first, got[:, 0] / got[:, 1])
        self.first, self.kept = self.first + len(self.kept), []


POSTFIX_EVERY_S = 2.0  # how often the progress bar's loss, accuracy and images per second are fetched


class _Postfix:
    """The progress bar's running loss, accuracy and images per second (this process's), fetched from the device
    every 2 s at most, so that the steps are not made to wait for the host."""

    def __init__(self, bar, carried: dict[str, Any] | None):
        self.bar, self.last = bar, time.perf_counter()
        self.began, self.seen = self.last, (M.summarize(carried)["count"] if carried else 0)

    def __call__(self, total: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - self.last < POSTFIX_EVERY_S:
            return
        m, self.last = M.summarize(total), now
        self.bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.4f}",
                             img_s=f"{(m['count'] - self.seen) / (now - self.began):.0f}", refresh=False)


def carry_of(total: dict[str, Any], layers: LayerNorms | None) -> dict[str, Any]:
    """What an epoch has gathered so far, as numpy arrays for a checkpoint: its metric sums and layer norms."""
    out = {"sums": {k: M.host_value(v) for k, v in total.items()}}
    if layers is not None and layers.steps.size:
        out["layers"] = layers._asdict()
    return out


def _join(a: LayerNorms | None, b: LayerNorms | None) -> LayerNorms | None:
    if a is None or b is None:
        return b if a is None else a
    return LayerNorms(*(np.concatenate([x, y]) for x, y in zip(a, b)))


def evaluate(state: TrainState, eval_fn: Callable, data: BatchSource, split: str = "test") -> dict[str, float]:
    """Loss and accuracy over every example of ``split``."""
    total = None
    for batch in data.eval_batches(split):
        total = M.accumulate(total, eval_fn(state, batch))
    return M.summarize(total)


@dataclasses.dataclass
class Placement:
    """How a fit's steps run, chosen once (``place_run``): one device (jit), a device mesh of every process
    (sharded jit: the state as replicated global arrays) or this process's devices (pmap: a replica each)."""

    mesh: Mesh | None = None            # the sharded-jit path's
    devices: list | None = None         # the pmap path's (more than one)

    def steps(self, state: TrainState, layer_norms_every: int) -> tuple[TrainState, Callable, Callable]:
        """(state placed for the steps, train step, eval step)."""
        if self.mesh is not None:
            return state, sharded_train_step(self.mesh, layer_norms_every=layer_norms_every), sharded_eval_step(self.mesh)
        if self.devices is not None:
            return (replicate(state, self.devices), pmap_train_step(devices=self.devices, layer_norms_every=layer_norms_every),
                    pmap_eval_step(devices=self.devices))
        return state, jit_train_step(layer_norms_every=layer_norms_every), jit_eval_step()

    def single(self, state: TrainState) -> TrainState:
        """One copy of the state (pmap's replicas are identical)."""
        return unreplicate(state) if self.devices is not None else state


def place_run(state: TrainState, data: BatchSource, parallel: str) -> tuple[TrainState, Placement]:
    """Check ``parallel`` against the devices and processes and choose the placement; on the sharded-jit path the
    state becomes global arrays now, before a restore, so that orbax restores them in place."""
    if parallel not in PARALLEL:
        raise ValueError(f"parallel={parallel!r} is not one of {', '.join(PARALLEL)}")
    n_proc = data.process_count
    if parallel == "pmap" and n_proc > 1:
        raise ValueError("the pmap path runs in one process; with several processes use parallel='jit'")
    if n_proc > 1 and data.n_devices != jax.local_device_count():
        raise ValueError(f"with several processes every local device takes part: n_devices must be "
                         f"{jax.local_device_count()}, got {data.n_devices}")
    devices = jax.local_devices()[:data.n_devices]
    if parallel == "jit" and data.n_devices * n_proc > 1:
        mesh = make_mesh(jax.devices() if n_proc > 1 else devices)
        data.set_sharding(batch_sharding(mesh))
        return place(state, mesh), Placement(mesh=mesh)
    return state, Placement(devices=devices if parallel == "pmap" and data.n_devices > 1 else None)


def resume(state: TrainState, checkpointer: CheckpointStore | None, epochs: int, steps_per_epoch: int,
           log: Callable[[str], None]) -> tuple[TrainState, list[dict], int, dict[str, Any] | None]:
    """(state, history, first step, carry) after the newest intact checkpoint: the last finished epoch's, then
    a save inside the next epoch where there is one (its step and its running sums, ``carry``)."""
    history: list[dict] = []
    if checkpointer is None:
        return state, history, 0, None
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state, history = restored
        log(f"resuming after epoch {len(history)} from {checkpointer.run_dir}")
    partial = (checkpointer.restore_partial(state, len(history))
               if hasattr(checkpointer, "restore_partial") and len(history) < epochs else None)
    if partial is None:
        return state, history, 0, None
    state, start, carry = partial
    log(f"resuming epoch {len(history) + 1} after its step {start} of {steps_per_epoch}")
    return state, history, start, carry


class _EpochClock:
    """The epoch under way's wall time, counting the time a resumed epoch had already taken."""

    def start(self, carry: dict[str, Any] | None) -> None:
        self.began = time.perf_counter() - (float(carry["elapsed_s"]) if carry and "elapsed_s" in carry else 0.0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began


def _save_inside_epoch(checkpointer: CheckpointStore | None, history: list[dict], epochs: int, steps: int,
                       placement: Placement, clock: _EpochClock, log: Callable[[str], None]) -> Callable | None:
    """The save ``train_epoch`` calls inside an epoch (on its schedule, and when a stop is asked for), or None."""
    if checkpointer is None or not hasattr(checkpointer, "save_partial"):
        return None

    def save(s: TrainState, done: int, c: dict[str, Any]) -> None:
        c["elapsed_s"] = np.float64(clock.elapsed())  # the epoch's time so far, for its row
        checkpointer.save_partial(placement.single(s), history, done, c)
        if errors.pending_stop() is not None:
            log(f"epoch {len(history) + 1}/{epochs}: stopped after step {done} of {steps}, "
                "which is saved: the same command continues from the next one")
    return save


def _train_row(epoch: int, m: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": epoch + 1, "train_loss": m["loss"], "train_accuracy": m["accuracy"],
            "grad_norm": m["grad_norm"], "train_examples": m["count"]}


@functools.cache
def _machine() -> str:
    from jaxres import cpu
    device = jax.devices()[0]
    return cpu.machine(device.device_kind, device.platform)


def _close_epoch(state: TrainState, train_m: dict[str, Any], epoch: int, epochs: int, eval_fn: Callable,
                 data: BatchSource, clock: _EpochClock, log: Callable[[str], None]) -> tuple[dict, dict | None]:
    """(the epoch's history row, None) after evaluating the test split; or, where a step was non-finite,
    (its row without test metrics, where it diverged): that epoch is neither evaluated nor checkpointed."""
    row = _train_row(epoch, train_m)
    if train_m["nonfinite_steps"]:
        diverged = {"epoch": epoch + 1, "step": int(train_m["first_nonfinite_step"])}
        for split in getattr(data, "splits", ("test",)):
            row.update({f"{split}_loss": None, f"{split}_accuracy": None, f"{split}_examples": 0})
        row.update(diverged=True, epoch_time_s=clock.elapsed(), machine=_machine())
        log(f"epoch {epoch + 1}/{epochs}: diverged: non-finite loss or gradient at step {diverged['step']} "
            f"({int(train_m['nonfinite_steps'])} non-finite steps); the run stops, this epoch is not checkpointed")
        return row, diverged
    said = []
    for split in getattr(data, "splits", ("test",)):  # validation (where held out), then test
        m = evaluate(state, eval_fn, data, split)
        row.update({f"{split}_loss": m["loss"], f"{split}_accuracy": m["accuracy"], f"{split}_examples": m["count"]})
        said.append(f"{'val' if split == 'validation' else split} loss {m['loss']:.4f} acc {m['accuracy']:.4f}")
    row["epoch_time_s"] = clock.elapsed()
    row["machine"] = _machine()
    first = train_m.get("first_step_s")
    split = f" (first step {first:.1f}s, compilation included)" if first is not None else ""
    log(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
        + " | ".join(said) + f" | {row['epoch_time_s']:.1f}s{split}")
    return row, None


def _stop_early(history: list[dict], patience: int, epochs: int, log: Callable[[str], None]) -> dict | None:
    """Where the run stops early after its last epoch (``stopping.early_stop``), said in one line; None: it goes on."""
    stopped = stopping.early_stop(history, patience)
    if stopped:
        best = stopped["best_epoch"]
        log(f"epoch {len(history)}/{epochs}: early stop: the validation accuracy has not improved on epoch {best}'s "
            f"{history[best - 1]['validation_accuracy']:.4f} for {patience} epochs")
    return stopped


def fit(state: TrainState, data: BatchSource, epochs: int, streams: Streams,
        checkpointer: CheckpointStore | None = None, progress: bool = True,
        log: Callable[[str], None] | None = None, on_epoch: Callable[[dict], None] | None = None,
        layer_norms_every: int = 0, on_layer_norms: Callable[[int, LayerNorms], None] | None = None,
        parallel: str = "jit", patience: int = 0, on_steps: Callable[[int, np.ndarray], None] | None = None,
        ) -> FitResult:
    """Train ``state`` on ``data`` for ``epochs`` epochs, evaluating its validation (where held out) and test
    splits after each; returns the state, the history (one row per epoch, also passed to ``on_epoch``), where it
    diverged and where it stopped early.

    With a ``checkpointer`` the run resumes after the newest intact save (``resume``) and saves at the end of every
    epoch. A non-finite loss or gradient ends the run after its epoch, which is neither evaluated nor saved.
    ``parallel`` places the step on several devices (``place_run``). ``layer_norms_every=N`` records per-layer
    norms every N-th step, passed per epoch to ``on_layer_norms(epoch, norms)`` before its save. ``patience`` > 0
    ends the run once the validation accuracy has not improved for that many epochs (``stopping.early_stop``).
    ``on_steps(first, losses)``: each step's training loss (``train_epoch``).
    """
    from tqdm import tqdm

    log = log or tqdm.write
    state, placement = place_run(state, data, parallel)
    state, history, start, carry = resume(state, checkpointer, epochs, data.steps_per_epoch, log)
    stopped = stopping.early_stop(history, patience)
    if len(history) >= epochs or stopped:
        log(f"already trained for {len(history)} epochs{' (stopped early)' if stopped else ''}: nothing to do")
        data.set_sharding(None)
        return FitResult(state, history, None, stopped)
    state, step_fn, eval_fn = placement.steps(state, layer_norms_every)
    clock, diverged = _EpochClock(), None
    save = _save_inside_epoch(checkpointer, history, epochs, data.steps_per_epoch, placement, clock, log)
    agree = getattr(getattr(checkpointer, "policy", None), "agree", None)
    try:
        with errors.training(data.process_count):  # a stop signal now waits for the step under way, and saves it
            first_epoch = len(history)  # the epoch whose first step compiles the step
            for epoch in range(first_epoch, epochs):
                clock.start(carry)
                state, train_m, layers = train_epoch(state, step_fn, data, epoch, streams, f"epoch {epoch + 1}/{epochs}",
                                                     progress, start, carry, save, agree, epoch == first_epoch, on_steps)
                start, carry = 0, None
                if layers is not None and on_layer_norms is not None:
                    on_layer_norms(epoch + 1, layers)
                row, diverged = _close_epoch(state, train_m, epoch, epochs, eval_fn, data, clock, log)
                history.append(row)
                if checkpointer is not None and diverged is None:
                    checkpointer.save(placement.single(state), history)
                if on_epoch is not None:
                    on_epoch(row)
                if diverged is not None or (stopped := _stop_early(history, patience, epochs, log)):
                    break
                if agree is not None:  # with several processes: a stop asked for on any of them stops all
                    agree(None, False, errors.pending_stop())
                errors.raise_if_stopped()  # a stop asked for during the evaluation or the save: the epoch is kept
    finally:
        data.set_sharding(None)
        if checkpointer is not None:
            checkpointer.wait()
    return FitResult(placement.single(state), history, diverged, stopped)
