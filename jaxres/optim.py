"""Optimizers and learning-rate schedules from the run config, through optax.

``make_optimizer(cfg)`` is the one place a run's optimizer is built:

* ``adam`` (the seed study's: lr 1e-3, betas 0.9/0.999) and ``sgd`` (momentum, optionally
  Nesterov) take ``weight_decay`` as L2 added to the gradient, as PyTorch's ``Adam`` / ``SGD`` and
  Caffe do (He et al.'s 1e-4);
* ``adamw`` decouples it (``optax.adamw``: the decay is multiplied by the learning rate, as in
  PyTorch's ``AdamW``);
* ``lion`` (Chen et al. 2023, "Symbolic discovery of optimization algorithms", ``optax.lion``): the sign of an
  interpolation of momentum and gradient, b1 0.9 / b2 0.99, decoupled decay as ``adamw`` (none by default;
  optax's own default is 1e-3). It takes a learning rate 3-10x smaller than Adam's.

``decay_on="kernels"`` exempts biases and normalization scales/offsets from weight decay.
Schedules multiply the peak ``optimizer.lr``: ``constant``; ``piecewise`` (times ``factor`` at
each of ``boundaries``, e.g. He et al.'s 0.1 at 32k and 48k steps); ``cosine`` (to
``final_fraction`` of the peak over ``decay_steps``, the whole run by default); all with an
optional linear warm-up, factor (step + 1) / warmup_steps, whose steps count towards the
boundaries and the cosine (steps are absolute). ``tests/test_optim.py`` checks the updates
against ``torch.optim`` on the same gradients (Lion, which PyTorch lacks, against a NumPy reference).

Each optimizer and schedule is one entry of ``jaxres.catalog`` (its name, its settings and defaults, and the
path of its builder here: ``adam``, ``sgd``, ``cosine_schedule`` ...), resolved when a run is built: adding one is
that entry plus its builder function.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxres import catalog
from jaxres.config import ConfigError, RunConfig, ScheduleConfig


def cosine_schedule(cfg: ScheduleConfig, lr: float, total_steps: int | None) -> optax.Schedule:
    steps = cfg.decay_steps or total_steps
    if steps is None:
        raise ConfigError("schedule.name='cosine' without schedule.decay_steps needs the run's total steps")
    return optax.cosine_decay_schedule(lr, steps, alpha=cfg.final_fraction)


def constant_schedule(cfg: ScheduleConfig, lr: float, total_steps: int | None) -> optax.Schedule:
    return optax.constant_schedule(lr)


def piecewise_schedule(cfg: ScheduleConfig, lr: float, total_steps: int | None) -> optax.Schedule:
    return optax.piecewise_constant_schedule(lr, {int(b): cfg.factor for b in cfg.boundaries})


def _builder(kind: str, name: str) -> Callable[..., Any]:
    """The builder jaxres.catalog names for ``name``, or one ConfigError line: a name the config accepts but
    nothing builds never falls through to another optimizer or schedule."""
    try:
        return catalog.resolve(kind, name)
    except (ValueError, ImportError, AttributeError) as e:
        raise ConfigError(f"{kind}.name={name!r} has no builder ({e})") from None


def make_schedule(cfg: ScheduleConfig, lr: float, total_steps: int | None = None) -> optax.Schedule:
    """The learning rate as a function of the (0-based) step."""
    main = _builder("schedule", cfg.name)(cfg, lr, total_steps)
    if not cfg.warmup_steps:
        return main
    warmup = cfg.warmup_steps
    return lambda step: main(step) * jnp.minimum(1.0, (step + 1) / warmup)


def _kernels_only(params: Any) -> Any:
    """True for convolution and dense kernels, False for biases and normalization parameters."""
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def adam(s: dict[str, Any], lr: optax.ScalarOrSchedule, mask: Any) -> optax.GradientTransformation:
    return _l2(optax.adam(lr, b1=s["b1"], b2=s["b2"], eps=s["eps"]), s, mask)


def sgd(s: dict[str, Any], lr: optax.ScalarOrSchedule, mask: Any) -> optax.GradientTransformation:
    return _l2(optax.sgd(lr, momentum=s["momentum"] or None, nesterov=s["nesterov"]), s, mask)


def _l2(tx: optax.GradientTransformation, s: dict[str, Any], mask: Any) -> optax.GradientTransformation:
    """Weight decay as L2 added to the gradient before ``tx`` (PyTorch's Adam / SGD, Caffe)."""
    return optax.chain(optax.add_decayed_weights(s["weight_decay"], mask), tx) if s["weight_decay"] else tx


def adamw(s: dict[str, Any], lr: optax.ScalarOrSchedule, mask: Any) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=s["b1"], b2=s["b2"], eps=s["eps"], weight_decay=s["weight_decay"], mask=mask)


def lion(s: dict[str, Any], lr: optax.ScalarOrSchedule, mask: Any) -> optax.GradientTransformation:
    return optax.lion(lr, b1=s["b1"], b2=s["b2"], weight_decay=s["weight_decay"], mask=mask)


def learning_rate(cfg: RunConfig, steps_per_epoch: int | None = None) -> optax.Schedule:
    """The learning rate of ``cfg`` at each (0-based) step of the run; ``steps_per_epoch`` sizes a whole-run cosine."""
    total = steps_per_epoch * cfg.epochs if steps_per_epoch else None
    return make_schedule(cfg.schedule, cfg.optimizer.lr, total)


def rates(schedule: optax.Schedule, first: int, n: int) -> np.ndarray:
    """``schedule`` at run steps ``first`` .. ``first + n - 1``, as n floats (a constant schedule gives one scalar)."""
    return np.broadcast_to(np.asarray(schedule(jnp.arange(first, first + n)), np.float64), (n,))


def make_optimizer(cfg: RunConfig, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The optax optimizer of ``cfg`` (optimizer and schedule); ``steps_per_epoch`` sizes a whole-run cosine."""
    o = cfg.optimizer
    lr = learning_rate(cfg, steps_per_epoch)
    mask = _kernels_only if o.decay_on == "kernels" else None
    return _builder("optimizer", o.name)(o.check() or o.settings(), lr, mask)
