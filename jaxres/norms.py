"""The normalizations the models use, each followed optionally by a residual block's shortcut addition and a
ReLU: ``make_norm(kind, ...)`` gives ``norm(features, name)(x, add=None, relu=False)`` = relu(norm(x) + add).

Batch norm (``BatchNorm``) has flax's ``nn.BatchNorm`` parameters, statistics and numbers (same names, same
formula: batch mean and biased variance in float32, ``y = (x - mean) / sqrt(var + eps) * scale + bias``, running
averages with ``momentum``). On the ``onednn`` backend (``jaxres.conv.direct_backend()``, also under
``winograd``), in training, on one device
(no ``axis_name``: under pmap or shard_map the statistics are averaged over devices, which flax's does), it
runs as one oneDNN call forward, with the ReLU or the addition and the ReLU fused, and one backward (the ReLU's
gradient from the output, then the gradients of x, scale and shift): the elementwise work of a normalization
in XLA, with bfloat16 converts around it, was most of a resnet20 step on CPU. Elsewhere, and in evaluation
(an affine map that XLA fuses), it is flax's ``nn.BatchNorm`` in the same scope (``nn.share_scope``), so the
parameters are the same either way. ``JAXRES_ONEDNN_NORM=0`` keeps flax's everywhere (to compare). Group and
layer norm are flax's, with the addition and ReLU in XLA.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxres import conv
from jaxres.config.env import COMPUTE_ENV

from jaxres.catalog import NORMS  # noqa: E402 - the normalizations make_norm builds
ENV = COMPUTE_ENV["onednn_norm"]  # compute.onednn_norm=false: flax's batch norm in XLA on onednn too


def _act(y: jax.Array, add: jax.Array | None, relu: bool) -> jax.Array:
    if add is not None:
        y = y + add
    return nn.relu(y) if relu else y


class BatchNorm(nn.Module):
    """flax's ``nn.BatchNorm`` (``use_fast_variance=False``, channels last), then ``+ add`` and a ReLU; through
    oneDNN where it can (module docstring)."""

    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: str | None = None
    dtype: Any = jnp.float32
    scale_init: Callable[..., Any] = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array, add: jax.Array | None = None, relu: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        if not self._onednn(x, add, relu):
            flax_bn = nn.BatchNorm(use_running_average=self.use_running_average, momentum=self.momentum,
                                   epsilon=self.epsilon, use_fast_variance=False, axis_name=self.axis_name,
                                   dtype=self.dtype, scale_init=self.scale_init)
            nn.share_scope(self, flax_bn)
            return _act(flax_bn(x), add, relu)
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        shift = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        y, mean, var = batch_norm(x, scale, shift, add, relu, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y

    def _onednn(self, x: jax.Array, add: jax.Array | None, relu: bool) -> bool:
        if self.use_running_average or self.axis_name is not None or not conv.settings().onednn_norm:
            return False
        if x.ndim != 4 or conv.direct_backend() != "onednn" or (add is not None and (add.shape != x.shape or not relu)):
            return False
        from jaxres import onednn

        return jnp.dtype(x.dtype).name in onednn.dtypes()


def batch_norm(x, scale, shift, add=None, relu: bool = False, eps: float = 1e-5):
    """(relu(batch_norm(x) + add), batch mean, batch variance) through oneDNN; differentiable in x, scale, shift
    and add. The statistics are returned for the running averages and carry no gradient."""
    if add is None:
        y, mean, var = _norm(x, scale, shift, relu, eps)
    else:
        y, mean, var = _norm_add(x, scale, shift, add.astype(x.dtype), eps)
    return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _norm(x, scale, shift, relu, eps):
    from jaxres import onednn

    return onednn.norm_forward(x, scale, shift, eps, relu)


def _norm_fwd(x, scale, shift, relu, eps):
    y, mean, var = _norm(x, scale, shift, relu, eps)
    return (y, mean, var), (x, y if relu else None, scale, mean, var)


def _norm_bwd(relu, eps, res, cotangents):
    dx, dscale, dshift, _ = _backward(eps, res, cotangents[0])
    return dx, dscale, dshift


def _backward(eps, res, dy):
    """(dx, dscale, dshift, dz); dz is the gradient of the tensor added before the ReLU (None without a ReLU)."""
    from jaxres import onednn

    x, y, scale, mean, var = res
    dy = dy.astype(x.dtype)
    if y is None:
        return (*onednn.norm_backward(x, dy, scale, mean, var, eps), None)
    return onednn.norm_relu_backward(x, y, dy, scale, mean, var, eps)


_norm.defvjp(_norm_fwd, _norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _norm_add(x, scale, shift, s, eps):
    from jaxres import onednn

    return onednn.norm_add_forward(x, scale, shift, s, eps)


def _norm_add_fwd(x, scale, shift, s, eps):
    y, mean, var = _norm_add(x, scale, shift, s, eps)
    return (y, mean, var), (x, y, scale, mean, var)


def _norm_add_bwd(eps, res, cotangents):
    return _backward(eps, res, cotangents[0])


_norm_add.defvjp(_norm_add_fwd, _norm_add_bwd)


def make_norm(kind: str, train: bool, axis_name: str | None, dtype: Any) -> Callable[..., Callable] | None:
    """A factory ``norm(features, name=..., scale_init=...)`` for the chosen normalization, giving
    ``apply(x, add=None, relu=False)``; None for "none".

    Batch norm averages its statistics over ``axis_name`` when given (under pmap), so a
    data-parallel step sees the same statistics as one device with the whole batch.
    """
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")
    if kind == "none":
        return None

    def norm(features: int, name: str, scale_init=nn.initializers.ones) -> Callable:
        if kind == "batch":
            module = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name,
                               dtype=dtype, scale_init=scale_init, name=name)
            return lambda x, add=None, relu=False: module(x, add, relu)
        if kind == "group":  # up to 32 groups, as many as divide the width
            module = nn.GroupNorm(num_groups=math.gcd(features, 32), dtype=dtype, scale_init=scale_init, name=name)
        else:
            module = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, dtype=dtype, scale_init=scale_init,
                                  name=name)
        return lambda x, add=None, relu=False: _act(module(x), add, relu)

    return norm
