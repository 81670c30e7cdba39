"""The convolution jaxres's models use: ``lax.conv_general_dilated``, with a cheaper kernel gradient on CPU.

For a stride-1 NHWC/HWIO convolution, the gradient with respect to the kernel is itself a
convolution that contracts over batch and image, ``dW = conv(x, dy)``. JAX's transpose rule makes
``x`` its image operand, so XLA's CPU (Eigen) path transposes ``x`` to batch-minor order
(an element-wise transpose) and ``dy`` to the kernel layout (a block transpose). When ``x`` has
more channels than ``dy`` (a 64 -> 32 layer), computing the same sum the other way round,
``conv(dy, x)`` flipped, puts the element-wise transpose on the smaller tensor: 1.1-1.4x faster
for that gradient here (``python -m benchmarks.conv_layer``, README "Benchmarks"). The result is
the same sum in another order (f32 rounding only; ``tests/test_conv.py``).

The convolution *backend* is an explicit, visible choice (``backend()``, printed in every run
header and recorded in every ``results.json``):

* ``xla``: ``lax.conv_general_dilated`` for everything;
* ``xla-swapped``: the same, but the kernel gradient of the cases above is computed the other way
  round. CPU only.

By default the backend is ``xla-swapped`` on the CPU backend and ``xla`` elsewhere;
``JAXRES_CONV=xla`` (or ``JAXRES_CPU_FAST_PATH=0``, which also drops the XLA flag of
``jaxres.cpu``) or ``set_backend("xla")`` chooses ``xla``. The choice is read when a function is
traced, so ``set_backend`` clears JAX's compilation caches. A ``jax.custom_vjp`` function supports
reverse mode (``grad``, ``vjp``, ``jacrev``) but not forward mode (``jvp``, ``jacfwd``); use the
``xla`` backend for those.
"""
from __future__ import annotations

import functools
import os

import jax
from jax import lax

from jaxres import cpu

NHWC = ("NHWC", "HWIO", "NHWC")
BACKENDS = ("xla", "xla-swapped")
ENV = "JAXRES_CONV"
_chosen: str | None = None  # set_backend's choice; None: automatic


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown convolution backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "xla-swapped" and jax.default_backend() != "cpu":
        raise ValueError(f"convolution backend 'xla-swapped' is for the CPU backend, not {jax.default_backend()}")
    return name


def backend() -> str:
    """The convolution backend of convolutions traced now (see the module docstring)."""
    if _chosen is not None:
        return _chosen
    if os.environ.get(ENV):
        return _check(os.environ[ENV].strip())
    return "xla-swapped" if cpu.switched_on() and jax.default_backend() == "cpu" else "xla"


def set_backend(name: str | None) -> None:
    """Choose the convolution backend (None: automatic again); JAX's caches are cleared so that
    nothing compiled with the previous choice is reused."""
    global _chosen
    _chosen = None if name is None else _check(name)
    jax.clear_caches()


def enabled() -> bool:
    """Whether the custom kernel gradient is used for convolutions traced now."""
    return backend() == "xla-swapped"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """Drop-in for ``lax.conv_general_dilated`` (Flax ``nn.Conv(conv_general_dilated=...)``)."""
    pads = _eligible(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, batch_group_count)
    if pads is None or not enabled():
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count,
                                        precision, preferred_element_type)
    return _conv(lhs, rhs, pads, precision, preferred_element_type)


def _eligible(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups):
    """The explicit padding when the custom kernel gradient applies and pays, else None."""
    if lhs.ndim != 4 or rhs.ndim != 4 or groups != 1 or batch_groups != 1:
        return None
    if any(s != 1 for s in strides) or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())):
        return None
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn) != lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, NHWC):
        return None
    if lhs.shape[-1] <= rhs.shape[-1]:  # x has no more channels than dy: XLA's own order is the cheaper one
        return None
    window = rhs.shape[:2]
    pads = lax.padtype_to_pads(lhs.shape[1:3], window, (1, 1), padding) if isinstance(padding, str) else padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if any(not (0 <= p < k) for (lo, hi), k in zip(pads, window) for p in (lo, hi)):
        return None
    return pads


def _forward(x, w, pads, precision, preferred_element_type):
    return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=NHWC, precision=precision,
                                    preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, pads, precision, preferred_element_type):
    return _forward(x, w, pads, precision, preferred_element_type)


def _conv_fwd(x, w, pads, precision, preferred_element_type):
    return _forward(x, w, pads, precision, preferred_element_type), (x, w)


def _conv_bwd(pads, precision, preferred_element_type, res, dy):
    x, w = res
    _, dx_fn = jax.vjp(lambda x_: _forward(x_, w, pads, precision, preferred_element_type), x)
    (dx,) = dx_fn(dy)
    return dx, kernel_gradient_swapped(x, dy.astype(x.dtype), w.shape[:2], pads, precision).astype(w.dtype)


def kernel_gradient_swapped(x, dy, window, pads, precision=None):
    """dW of a stride-1 NHWC/HWIO convolution, as a convolution of dy (batch-minor) by x, flipped.

    dW[kh, kw, ci, co] = sum_{n,h,w} x[n, h, w, ci] * dy_pad[n, h + Kh-1-kh, w + Kw-1-kw, co], where
    dy_pad pads dy by (K-1-lo, K-1-hi) for the forward padding (lo, hi) of each spatial axis.
    """
    dy_pads = [(k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, window)]
    out = lax.conv_general_dilated(dy.transpose(3, 1, 2, 0), x.transpose(1, 2, 0, 3), (1, 1), dy_pads,
                                   dimension_numbers=NHWC, precision=precision)
    return out[:, ::-1, ::-1, :].transpose(1, 2, 3, 0)  # (Co, Kh, Kw, Ci) -> (Kh, Kw, Ci, Co)


_conv.defvjp(_conv_fwd, _conv_bwd)
