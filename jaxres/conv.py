"""The convolution jaxres's models use: ``lax.conv_general_dilated``, or oneDNN on the CPU.

The convolution *backend* is an explicit, visible choice (``backend()``, printed in every run header
and recorded in every ``results.json``):

* ``onednn`` (the CPU default where jaxres's oneDNN extension loaded, ``jaxres.onednn``): forward,
  input gradient and kernel gradient of every NHWC/HWIO convolution without dilation or groups, in
  float32 or bfloat16, run as oneDNN primitives through the XLA FFI: 1.2-4x faster than XLA's CPU
  convolutions per pass (``python -m benchmarks.conv_layer``), the kernel gradient most. Anything else
  (dilation, groups, other dtypes) stays ``lax``. The models call ``conv_bias_act``, which on this
  backend also adds the bias and applies a following ReLU inside oneDNN's forward pass, and computes
  the bias gradient inside its kernel-gradient pass (no separate XLA passes over the activations),
  and ``conv_bias_add_act``, which also adds a residual block's shortcut before the ReLU. Backward, a
  convolution's input and kernel gradients go to oneDNN in one call, which on exactly two OpenMP
  threads runs them at the same time on one thread each (``JAXRES_CONV_OVERLAP_GRADS=0``: two calls,
  one after the other on all threads); no input gradient is computed where the input is not
  differentiated (a network's input image).
* ``xla-swapped`` (the CPU default where oneDNN is unavailable): ``lax``, except that for a stride-1
  convolution with more input than output channels (64 -> 32) the kernel gradient, itself a
  convolution ``dW = conv(x, dy)``, is computed the other way round, ``conv(dy, x)`` flipped, so
  XLA's element-wise transpose falls on the smaller tensor (1.1-1.4x for that gradient).
* ``xla``: ``lax.conv_general_dilated`` for everything (the default off the CPU).
* ``winograd``: Winograd's F(4x4, 3x3) in plain XLA (``jaxres.winograd``: forward, input and kernel
  gradient) for every stride-1 3x3 convolution with at least 16 input channels in float32, on any
  backend; every other convolution (a network's first layer, strided ones, bfloat16) takes the direct
  path ``auto`` would choose. 4x fewer multiplies, 2.25x the memory traffic of its input: off by default,
  because on the CPUs measured so far oneDNN's direct convolutions are faster (docs/benchmarks.md).

The run config's compute section chooses (``compute.conv``: auto, onednn, xla-swapped, xla, winograd;
``compute.fast_path=false`` makes auto mean ``xla``; ``compute.fuse_add``, ``compute.overlap_grads``), with
the environment variables of ``jaxres.config.env.COMPUTE_ENV`` (``JAXRES_CONV=xla`` ...) as overrides. This module keeps
no settings of its own: a model built from a run config (``models.from_config``) carries its compute section and
traces with it (``traced_with``, a context variable), so its numerics follow its config whatever the process
traced before, and ``jaxres.run`` traces the run's header and steps the same way; a model built without one
traces with the defaults and the environment's overrides. ``forced(name)`` picks a backend by hand for a block
(benchmarks, tests) and clears JAX's compilation caches on the way in and out, because a function that carries
no settings (a bare ``jit`` of ``conv_general_dilated``) is cached by JAX without them. ``onednn`` and ``xla-swapped`` are ``jax.custom_vjp``
functions: reverse mode (``grad``, ``vjp``, ``jacrev``) and ``jit``, ``pmap``, ``vmap`` work; forward mode
(``jvp``, ``jacfwd``) does not: use the ``xla`` backend for it. Tests: ``tests/test_conv.py``,
``tests/test_onednn.py`` (same values and gradients as lax up to float32 rounding).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxres.config.env import COMPUTE_ENV, from_env
from jaxres.config.sections import ComputeConfig

NHWC = ("NHWC", "HWIO", "NHWC")
BACKENDS = ("onednn", "xla-swapped", "xla", "winograd")
ENV = COMPUTE_ENV["conv"]
FUSE_ADD_ENV = COMPUTE_ENV["fuse_add"]
OVERLAP_ENV = COMPUTE_ENV["overlap_grads"]
_traced: contextvars.ContextVar[ComputeConfig | None] = contextvars.ContextVar("jaxres_compute", default=None)


def settings() -> ComputeConfig:
    """The compute settings of what is traced now: the innermost ``traced_with``'s (a model built from a run
    config carries its compute section), else the defaults with the environment's overrides
    (``jaxres.config.env.from_env``), read when a function is traced."""
    traced = _traced.get()
    return traced if traced is not None else from_env()


@contextlib.contextmanager
def traced_with(compute: ComputeConfig | None):
    """Within this block, trace with ``compute`` (None: as outside it). The models enter it with their own
    ``compute`` field, so that a model's numerics follow the config it was built from, whatever else the
    process traced before, and two models built from configs that differ in ``compute.conv`` trace to
    different convolutions (they compare unequal, so JAX compiles each)."""
    if compute is None:
        yield
        return
    if compute.conv != "auto":
        _check(compute.conv)
    token = _traced.set(compute)
    try:
        yield
    finally:
        _traced.reset(token)


@contextlib.contextmanager
def forced(name: str):
    """Within this block, trace with the convolution backend ``name`` (the other compute settings as outside
    it) where no model's own settings say otherwise; JAX's caches are cleared on the way in and out, so that
    nothing traced with the other backend is reused (benchmarks, tests)."""
    compute = settings().model_copy(update={"conv": _check(name)})
    jax.clear_caches()
    try:
        with traced_with(compute):
            yield
    finally:
        jax.clear_caches()


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown convolution backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name not in ("xla", "winograd") and jax.default_backend() != "cpu":
        raise ValueError(f"convolution backend {name!r} is for the CPU backend, not {jax.default_backend()}")
    if name == "onednn":
        from jaxres import onednn

        ok, why = onednn.load()
        if not ok:
            raise ValueError(f"convolution backend 'onednn' is unavailable: {why}")
    return name


def backend() -> str:
    """The convolution backend of convolutions traced now (see the module docstring)."""
    s = settings()
    return _check(s.conv) if s.conv != "auto" else _direct(s)


def _direct(s: ComputeConfig) -> str:
    """The direct backend ``auto`` chooses: onednn on the CPU where it loaded, else xla-swapped; xla off the CPU
    or without the fast path."""
    if not s.fast_path or jax.default_backend() != "cpu":
        return "xla"
    from jaxres import onednn

    return "onednn" if onednn.load()[0] else "xla-swapped"


def direct_backend() -> str:
    """The backend of the convolutions traced now that Winograd does not take (all of them but on ``winograd``)."""
    name = backend()
    return _direct(settings()) if name == "winograd" else name


def describe(precision: str = "float32") -> str:
    """The backend in use, in words, for run headers: with oneDNN's version, or why it is not used, and
    whether oneDNN convolves ``precision`` on this CPU (bfloat16 needs AVX512_BF16; without it XLA's
    bfloat16 convolutions run, slower than float32)."""
    name = backend()
    if name != "winograd":
        return _describe_direct(name, precision)
    from jaxres import winograd

    return (f"winograd (F({winograd.TILE}x{winograd.TILE},3x3) in XLA for stride-1 3x3 float32 convolutions with >= "
            f"{winograd.MIN_CHANNELS} input channels; the others: {_describe_direct(direct_backend(), precision)})")


def brief(precision: str = "float32") -> str:
    """The backend in a few words, for run headers: oneDNN's version, or ``describe`` where oneDNN does not run
    (that says why); ``describe`` has every detail, in results.json."""
    from jaxres import onednn

    if backend() != "onednn" or not onednn.version():
        return describe(precision)
    slow = "" if precision in onednn.dtypes() else f", {precision} convolutions in XLA (no AVX512_BF16 here)"
    return f"onednn {onednn.version()}{slow}"


def _describe_direct(name: str, precision: str) -> str:
    from jaxres import onednn

    ok, what = onednn.load() if jax.default_backend() == "cpu" else (False, "not a CPU backend")
    if name == "onednn":  # the settings that change how oneDNN sums, so a rerun's last digits
        if precision not in onednn.dtypes():
            what += (f"; {precision} convolutions in XLA: this CPU has no oneDNN {precision} (it needs "
                     "AVX512_BF16), so the step is slower than float32 here")
        at_once = overlap_grads(settings()) and onednn.grads_at_once()
        what += "; input and kernel gradients " + ("at once, one thread each" if at_once else "one after the other")
        if settings().overlap_grads == "auto":
            what += f" (compute.overlap_grads=auto: {'' if _avx512() else 'no '}AVX-512 here)"
        if not settings().fuse_add:
            what += "; shortcut addition in XLA"
    if name != "onednn" and precision == "bfloat16" and jax.default_backend() == "cpu" and not _bf16_cpu():
        # oneDNN's own note says this where it runs; every other backend says it too (issue 49)
        return (f"{name} ({what}; " if not ok else f"{name} (") + ("bfloat16 on a CPU without AVX512_BF16: it gains "
                                                                  "nothing here, and is slower than float32)")
    return f"{name} ({what})" if name == "onednn" or not ok else name


def _bf16_cpu() -> bool:
    from jaxres import cpu

    return "avx512_bf16" in cpu.host()["isa"]


def enabled() -> bool:
    """Whether the swapped kernel-gradient rule is used for convolutions traced now."""
    return backend() == "xla-swapped"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """Drop-in for ``lax.conv_general_dilated`` (Flax ``nn.Conv(conv_general_dilated=...)``)."""
    name = backend()
    if name == "winograd":
        pads = _winograd_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                              feature_group_count, batch_group_count, preferred_element_type)
        if pads is not None:
            from jaxres import winograd

            return winograd.conv(lhs, rhs, pads)
        name = direct_backend()
    if name == "onednn":
        pads = _onednn_eligible(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                feature_group_count, batch_group_count, preferred_element_type)
        if pads is not None:
            return _onednn_conv(lhs, rhs, tuple(int(s) for s in window_strides), pads)
    if name == "xla-swapped":
        pads = _eligible(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, batch_group_count)
        if pads is not None:
            return _conv(lhs, rhs, pads, precision, preferred_element_type)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)


def conv_bias_act(x, w, b, strides, padding, relu: bool = False):
    """``max(conv(x, w) + b, 0)`` (``relu``) or ``conv(x, w) + b`` for NHWC ``x``, HWIO ``w``, bias ``b``
    of one entry per output channel, or None. On the ``onednn`` backend bias and ReLU run inside the
    convolution's own output loop, and the bias gradient inside the kernel gradient's pass over dy
    (what Keras's fused convolutions do); elsewhere, and where oneDNN does not take the convolution,
    it is ``conv_general_dilated`` then ``+ b`` then ``jax.nn.relu``, which XLA fuses."""
    strides = tuple(int(s) for s in strides)
    pads = _fused_pads(x, w, b, strides, padding)
    if pads is not None:
        return _onednn_conv_bias(x, w, b, strides, pads, bool(relu))  # (never on a convolution Winograd takes)
    y = conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
    if b is not None:
        y = y + b
    return jax.nn.relu(y) if relu else y


def conv_bias_add_act(x, w, b, s, strides, padding, relu: bool = False):
    """``max(conv(x, w) + b + s, 0)`` (``relu``) or ``conv(x, w) + b + s``, where ``s`` has the output's
    shape: the end of a residual block without normalization (its second convolution, the shortcut, the
    ReLU). On the ``onednn`` backend the addition and ReLU are post-ops of the convolution (one pass over
    the output instead of three); elsewhere, or with ``JAXRES_CONV_FUSE_ADD=0``, ``conv_bias_act`` then
    ``+ s`` then ``jax.nn.relu``."""
    strides = tuple(int(v) for v in strides)
    pads = _fused_pads(x, w, b, strides, padding) if settings().fuse_add else None
    if pads is not None and s.dtype == x.dtype:
        from jaxres import onednn

        if s.shape == onednn.output_shape(x.shape, w.shape, strides, pads):
            return _onednn_conv_bias_add(x, w, b, s, strides, pads, bool(relu))
    y = conv_bias_act(x, w, b, strides, padding) + s
    return jax.nn.relu(y) if relu else y


def _fused_pads(x, w, b, strides, padding):
    """The explicit padding where oneDNN takes a convolution with its bias (and post-ops), else None."""
    if b is None or b.dtype != x.dtype or b.shape != w.shape[-1:]:
        return None
    name = backend()
    if name == "winograd" and _winograd_pads(x, w, strides, padding, None, None, NHWC, 1, 1, None) is not None:
        return None
    if direct_backend() != "onednn":
        return None
    return _onednn_eligible(x, w, strides, padding, None, None, NHWC, 1, 1, None)


def _nhwc_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups):
    """Explicit ((top, bottom), (left, right)) padding of a plain NHWC/HWIO convolution, else None."""
    if lhs.ndim != 4 or rhs.ndim != 4 or groups != 1 or batch_groups != 1:
        return None
    if any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ())):
        return None
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn) != lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, NHWC):
        return None
    window = rhs.shape[:2]
    pads = lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding) if isinstance(padding, str) else padding
    return tuple((int(lo), int(hi)) for lo, hi in pads)


# ------------------------------------------------------------------ winograd
def _winograd_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups,
                   preferred_element_type):
    """The explicit padding where ``jaxres.winograd`` takes the convolution, else None."""
    from jaxres import winograd

    pads = _nhwc_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups)
    if pads is None or preferred_element_type is not None or lhs.dtype != rhs.dtype:
        return None
    return pads if winograd.eligible(lhs.shape, rhs.shape, lhs.dtype, tuple(strides), pads) else None


# ------------------------------------------------------------------ onednn
def _onednn_eligible(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups,
                     preferred_element_type):
    pads = _nhwc_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups)
    if pads is None or preferred_element_type is not None:
        return None
    from jaxres import onednn

    if lhs.dtype != rhs.dtype or jnp.dtype(lhs.dtype).name not in onednn.dtypes():  # bfloat16: where the CPU has it
        return None
    if any(p < 0 for pair in pads for p in pair) or any(s < 1 for s in strides):
        return None
    if any(size + lo + hi < k for size, (lo, hi), k in zip(lhs.shape[1:3], pads, rhs.shape[:2])):
        return None  # an empty output: leave it to lax
    return pads


# The rules below use symbolic zeros: the forward rule learns whether x is differentiated at all (a
# network's input image is not), so the backward rule computes dx only where it is needed (XLA drops
# an unused single-result call by itself, not one result of a call with two).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _onednn_conv(x, w, strides, pads):
    from jaxres import onednn

    return onednn.forward(x, w, strides, pads)


def _onednn_conv_fwd(x, w, strides, pads):
    return _onednn_conv(x.value, w.value, strides, pads), (x.value, w.value, None, x.perturbed, _overlap())


def _onednn_conv_bwd(strides, pads, res, dy):
    dx, dw, _, _ = _grads(strides, pads, False, False, res, dy)
    return dx, dw


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd, symbolic_zeros=True)


def _overlap() -> bool:
    """compute.overlap_grads as the forward pass is traced (the backward rule is traced after the model's block)."""
    return overlap_grads(settings())


def overlap_grads(compute: ComputeConfig) -> bool:
    """Whether the two gradients are asked at once: ``compute.overlap_grads``, where "auto" follows the CPU (at once
    with AVX-512, where it measured as fast or faster; one after the other on AVX2, where that did)."""
    return compute.overlap_grads if isinstance(compute.overlap_grads, bool) else _avx512()


@functools.cache
def _avx512() -> bool:
    from jaxres import cpu

    return "avx512f" in cpu.host()["isa"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _onednn_conv_bias(x, w, b, strides, pads, relu):
    from jaxres import onednn

    return onednn.bias_forward(x, w, b, strides, pads, relu)


def _onednn_conv_bias_fwd(x, w, b, strides, pads, relu):
    y = _onednn_conv_bias(x.value, w.value, b.value, strides, pads, relu)
    return y, (x.value, w.value, y if relu else None, x.perturbed, _overlap())


def _onednn_conv_bias_bwd(strides, pads, relu, res, dy):
    return _grads(strides, pads, True, relu, res, dy)[:3]


def _onednn_conv_bias_add_bwd(strides, pads, relu, res, dy):  # dz is also the shortcut's gradient
    return _grads(strides, pads, True, relu, res, dy)


def _grads(strides, pads, bias, relu, res, dy):
    """(dx, dw, db, dz) of y = act(conv(x, w) [+ b] [+ s]): dz is the gradient before the ReLU, which is
    also the gradient of the added s; dx is None where x is not differentiated, db where there is no b."""
    from jaxres import onednn

    x, w, y, need_dx, overlap = res  # dy is an array: JAX calls no rule for an output that does not reach the loss
    dy = dy.astype(x.dtype)
    if relu:  # jax.nn.relu's rule: no gradient where the output is 0 (XLA fuses it with its neighbours: faster
        dy = jnp.where(y > 0, dy, jnp.zeros_like(dy))  # than oneDNN's eltwise pass, measured)
    if need_dx and overlap:
        dx, dw, *db = onednn.backward(x, w, dy, strides, pads, bias)
        return dx, dw, (db[0] if bias else None), dy
    dw, db = onednn.kernel_bias_grad(x, dy, w.shape, strides, pads) if bias else (
        onednn.kernel_grad(x, dy, w.shape, strides, pads), None)
    return (onednn.input_grad(dy, w, x.shape, strides, pads) if need_dx else None), dw, db, dy


_onednn_conv_bias.defvjp(_onednn_conv_bias_fwd, _onednn_conv_bias_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _onednn_conv_bias_add(x, w, b, s, strides, pads, relu):
    from jaxres import onednn

    return onednn.bias_add_forward(x, w, b, s, strides, pads, relu)


def _onednn_conv_bias_add_fwd(x, w, b, s, strides, pads, relu):
    y = _onednn_conv_bias_add(x.value, w.value, b.value, s.value, strides, pads, relu)
    return y, (x.value, w.value, y if relu else None, x.perturbed, _overlap())


_onednn_conv_bias_add.defvjp(_onednn_conv_bias_add_fwd, _onednn_conv_bias_add_bwd, symbolic_zeros=True)


# ------------------------------------------------------------------ xla-swapped
def _eligible(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups):
    """The explicit padding when the swapped kernel gradient applies and pays, else None."""
    if any(s != 1 for s in strides):
        return None
    pads = _nhwc_pads(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn, groups, batch_groups)
    if pads is None or lhs.shape[-1] <= rhs.shape[-1]:  # x has no more channels than dy: XLA's order pays
        return None
    if any(not (0 <= p < k) for (lo, hi), k in zip(pads, rhs.shape[:2]) for p in (lo, hi)):
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
