"""Plain and residual convolutional networks (Flax Linen), and their presets.

Two module classes cover every network in the study:

* ``PlainCNN``: a stack of 3x3 convolutions (ReLU after each), flatten, dense.
  ``seed_cnn`` is the seed study's CNN: 64, 32, 64, 32, 64 filters.
* ``ResNet``: a stem convolution, stages of ``ResidualBlock``s, a head. Switching the
  shortcut off (``shortcut="none"``) gives the *plain twin*: the same layers and the
  same parameters, so a ResNet-vs-plain comparison changes exactly one thing.

Padding: every 3x3 convolution pads one pixel on every side, at every stride (``PAD``), as
PyTorch's ``padding=1`` and He et al.'s networks do. At stride 1 this is what ``"SAME"`` pads, so
the seed networks are unchanged by it; at stride 2 on an even size ``"SAME"`` would pad (0, 1), which
centres output (i, j) on input pixel (2i+1, 2j+1) while the subsampling shortcut ``x[:, ::2, ::2]``
takes (2i, 2j): branch and shortcut one pixel apart. With (1, 1) both sit on (2i, 2j).

Choice at the seed ResNet's shortcut (the seed's text is ambiguous about channels):
each seed block is ``conv(64) -> ReLU -> conv(32)``, so a block maps 32 channels to 32
channels and its shortcut is an exact identity. The image (1 or 3 channels) first goes
through a 3x3 *stem* convolution to 32 channels with ReLU; then every one of the five
shortcuts is the identity, no projection anywhere. The stem is the one layer the seed
did not describe; ``seed_resnet`` and ``seed_plain_twin`` both have it.

The CIFAR ResNets of He et al. (2015, "Deep residual learning", section 4.2), and how each
point of the paper maps to this module (``resnet20`` ... ``resnet110``, 6n+2 layers):

=============================================  ===============================================
paper                                          here
=============================================  ===============================================
first layer: 3x3 conv, 16 filters              ``stem`` (3x3, 16), then norm and ReLU
3 stages of 2n layers, 16/32/64 filters,       ``stage_sizes=(n, n, n)``, ``widths=(16, 32, 64)``,
feature maps 32/16/8                           outputs 32x32, 16x16, 8x8 (tested)
subsampling by convolutions with stride 2      the first conv (``conv0``) of the first block of
                                               stages 2 and 3 has stride 2, padding (1, 1)
BN right after each conv, before activation    ``norm="batch"`` (the presets' default; ``norm=
                                               "none"`` etc. for the study's other settings);
                                               convolutions have no bias when a norm follows
BN: Ioffe & Szegedy; Torch/Caffe conventions   ``epsilon=1e-5``; running averages with Flax
                                               ``momentum=0.9``, i.e. PyTorch's ``momentum=0.1``;
                                               batch variance in two passes, as PyTorch (Flax's
                                               one-pass default loses digits to cancellation)
block: conv-BN-ReLU-conv-BN, add, ReLU         ``ResidualBlock`` with ``post_act=True``
identity shortcuts, option A at stage entries  ``shortcut="identity"``: ``x[:, ::2, ::2]`` and
(zero entries padded for the new dimensions)   zero channels appended after the kept ones (a
                                               channel permutation of padding on both sides)
option B (projection at stage entries)         ``shortcut="projection"``: 1x1 conv, stride 2,
                                               no padding, plus norm
global average pooling, 10-way FC, softmax     ``head="avgpool"``, ``Dense(num_classes)``; the
                                               softmax is in the loss
weight initialization of He et al. [13]        ``kernel_init="he_normal"`` (the presets' default):
                                               N(0, 2 / fan_in), convolutions and the dense
                                               layer. Without normalization, use Glorot: He
                                               init makes a deep residual stack explode
plain counterparts: the same without shortcut  ``plain20`` ... ``plain110`` (``shortcut="none"``)
=============================================  ===============================================

Weight decay, momentum, the learning-rate schedule, augmentation and the per-channel input
standardization (the paper subtracts the per-pixel mean) belong to the training configuration
(``jaxres.config``), not to the network.

Initialisation of the seed networks: Glorot-uniform kernels and zero biases, the Keras
defaults the seed study trained with (``kernel_init="glorot_uniform"``). ``zero_init_residual``
zeroes the last scale of each residual branch (the last norm's scale, or the last convolution's
kernel when there is no norm), so every block starts as the identity.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxres import catalog
from jaxres.config import PRECISIONS, ConfigError
from jaxres.conv import conv_bias_act, conv_bias_add_act, traced_with
from jaxres.norms import make_norm
from jaxres.catalog import SHORTCUTS
HEADS = ("flatten", "avgpool")
PAD = ((1, 1), (1, 1))  # 3x3 convolutions: one pixel on every side, at every stride (module docstring)


def glorot_uniform() -> Callable[..., Any]:
    """Keras's default kernel initializer, as in the seed study (catalog.KERNEL_INITS["glorot_uniform"])."""
    return nn.initializers.glorot_uniform()


def he_normal() -> Callable[..., Any]:
    """He et al.'s N(0, 2 / fan_in), not truncated as jax's he_normal (catalog.KERNEL_INITS["he_normal"])."""
    return nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def initializer(name: str) -> Callable[..., Any]:
    """The initializer the catalog calls ``name``."""
    _check_choice("kernel_init", name, tuple(catalog.KERNEL_INITS))
    return catalog.resolve("kernel_init", name)()


def _check_input(x: jnp.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"expected a batch of NHWC images (rank 4), got shape {tuple(x.shape)}; "
            "add a batch axis with x[None] or a channel axis with x[..., None]"
        )


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


class Conv(nn.Module):
    """A 2-D convolution with ``nn.Conv``'s parameters (names, shapes, initializers, dtype promotion),
    computed by ``jaxres.conv.conv_bias_act``, so that the bias and a following ReLU (``relu=True``)
    run inside the convolution where the backend can (oneDNN on CPU)."""

    features: int
    kernel_size: Sequence[int]
    strides: int = 1
    padding: Any = PAD
    use_bias: bool = True
    relu: bool = False
    kernel_init: Callable[..., Any] = nn.initializers.glorot_uniform()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, add: jnp.ndarray | None = None) -> jnp.ndarray:
        """The convolution of ``x``, plus the bias, plus ``add`` (a tensor of the output's shape, before the
        ReLU: a residual block's shortcut), then the ReLU if ``relu``."""
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32) if self.use_bias else None
        x, kernel, bias, add = nn.dtypes.promote_dtype(x, kernel, bias, add, dtype=self.dtype)
        strides = (self.strides, self.strides)
        if add is None:
            return conv_bias_act(x, kernel, bias, strides, self.padding, self.relu)
        return conv_bias_add_act(x, kernel, bias, add, strides, self.padding, self.relu)


def _with_compute(call: Callable) -> Callable:
    """A network's ``__call__`` traced with the network's ``compute`` settings (``jaxres.conv.traced_with``):
    its convolutions and norms follow the config it was built from, not what the process traced before."""
    @functools.wraps(call)
    def traced(self, *args, **kwargs):
        with traced_with(self.compute):
            return call(self, *args, **kwargs)
    return traced


def _conv(init: str, **kw: Any) -> Callable[..., nn.Module]:
    """``Conv`` with the named kernel initializer."""
    return functools.partial(Conv, kernel_init=initializer(init), **kw)


class PlainCNN(nn.Module):
    """3x3 convolutions (padding 1) with ReLU (optionally normalized), flatten, dense."""

    widths: Sequence[int] = (64, 32, 64, 32, 64)
    num_classes: int = 10
    norm: str = "none"
    kernel_init: str = "glorot_uniform"
    dtype: Any = jnp.float32
    compute: Any = None  # a jaxres.config.ComputeConfig (models.from_config sets the run's), or None: the process's

    @nn.compact
    @_with_compute
    def __call__(self, x: jnp.ndarray, train: bool = False, axis_name: str | None = None) -> jnp.ndarray:
        _check_input(x)
        norm = make_norm(self.norm, train, axis_name, self.dtype)
        conv = _conv(self.kernel_init, kernel_size=(3, 3), padding=PAD, use_bias=norm is None, dtype=self.dtype)
        x = x.astype(self.dtype)
        for i, w in enumerate(self.widths):
            x = conv(w, relu=norm is None, name=f"conv{i}")(x)  # ReLU inside the convolution ...
            if norm is not None:
                x = norm(w, name=f"norm{i}")(x, relu=True)  # ... or after the normalization
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.num_classes, kernel_init=initializer(self.kernel_init), dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


class ResidualBlock(nn.Module):
    """conv(inner) -> [norm] -> ReLU -> conv(out) -> [norm]; add the shortcut; ReLU.

    ``shortcut``: "identity" (option A zero-padding where the shape changes), "projection"
    (1x1 conv where the shape changes, identity elsewhere), or "none" (the plain twin).
    ``post_act=False`` drops the ReLU after the addition, so x_{l+1} = x_l + F(x_l) exactly.
    The branch output F(x_l) is sown into the "intermediates" collection as "branch".
    """

    inner: int
    out: int
    strides: int = 1
    shortcut: str = "identity"
    norm: Callable[..., nn.Module] | None = None
    zero_init_residual: bool = False
    post_act: bool = True
    kernel_init: str = "glorot_uniform"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _conv(self.kernel_init, kernel_size=(3, 3), padding=PAD, use_bias=self.norm is None, dtype=self.dtype)
        last_init = nn.initializers.zeros if self.zero_init_residual else None
        r = conv(self.inner, strides=self.strides, relu=self.norm is None, name="conv0")(x)
        if self.norm is not None:
            r = self.norm(self.inner, name="norm0")(r, relu=True)
        if self.norm is None:
            init = {"kernel_init": last_init} if last_init else {}
            if self.shortcut != "none" and not self.is_mutable_collection("intermediates"):
                # conv1, its bias, the shortcut and the ReLU in one pass (jaxres.conv.conv_bias_add_act);
                # where the branch is sown, the same sum in steps below
                s = self._shortcut(x, (*r.shape[:3], self.out))
                return conv(self.out, relu=self.post_act, name="conv1", **init)(r, add=s)
            r = conv(self.out, name="conv1", **init)(r)
        else:
            r = conv(self.out, name="conv1")(r)
            norm1 = self.norm(self.out, name="norm1", **({"scale_init": last_init} if last_init else {}))
            if not self.is_mutable_collection("intermediates"):  # the addition and ReLU with the norm (oneDNN)
                s = self._shortcut(x, r.shape) if self.shortcut != "none" else None
                return norm1(r, add=s, relu=self.post_act)
            r = norm1(r)
        self.sow("intermediates", "branch", r)

        y = r
        if self.shortcut != "none":
            y = y + self._shortcut(x, r.shape)
        return nn.relu(y) if self.post_act else y

    def _shortcut(self, x: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
        if x.shape == shape:
            return x
        if self.shortcut == "projection":
            s = _conv(self.kernel_init)(self.out, (1, 1), strides=self.strides, padding="VALID",
                                        use_bias=self.norm is None, dtype=self.dtype, name="proj")(x)
            return s if self.norm is None else self.norm(self.out, name="proj_norm")(s)
        # Option A: subsample spatially, zero-pad the new channels. No parameters.
        s = x[:, :: self.strides, :: self.strides, :]
        if s.shape[1:3] != shape[1:3] or s.shape[-1] > shape[-1]:
            raise ValueError(f"identity shortcut cannot map {x.shape} to {shape}; use shortcut='projection'")
        return jnp.pad(s, ((0, 0), (0, 0), (0, 0), (0, shape[-1] - s.shape[-1])))


class PreActBlock(ResidualBlock):
    """The pre-activation block of He et al. (2016, "Identity mappings in deep residual networks"):
    [norm] -> ReLU -> conv(inner) -> [norm] -> ReLU -> conv(out), plus the shortcut, and no ReLU after the
    addition, so x_{l+1} = x_l + F(x_l) exactly (``post_act`` does not apply). A projection shortcut takes the
    pre-activated input, as theirs does. ``zero_init_residual`` zeroes the last convolution's kernel: the
    block starts as the identity. ``ResNet(block=PreActBlock)`` uses it; ResNet itself is unchanged."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _conv(self.kernel_init, kernel_size=(3, 3), padding=PAD, use_bias=self.norm is None, dtype=self.dtype)
        act = lambda v, width, name: (nn.relu(v) if self.norm is None  # noqa: E731
                                      else self.norm(width, name=name)(v, relu=True))
        a = act(x, x.shape[-1], "norm0")
        r = act(conv(self.inner, strides=self.strides, name="conv0")(a), self.inner, "norm1")
        r = conv(self.out, name="conv1", **({"kernel_init": nn.initializers.zeros} if self.zero_init_residual
                                            else {}))(r)
        self.sow("intermediates", "branch", r)
        if self.shortcut == "none":
            return r
        return r + self._shortcut(a if self.shortcut == "projection" else x, r.shape)


class ResNet(nn.Module):
    """Stem conv, stages of residual blocks, then a flatten or average-pool head.

    ``stage_sizes[i]`` blocks of width ``widths[i]`` (inner width ``inner_widths[i]``,
    default the same); the first block of stage i > 0 has stride ``downsample_stride``. ``block`` is the
    block class (``ResidualBlock``, ``PreActBlock``, or any module taking the same fields).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    inner_widths: Sequence[int] | None = None
    stem_width: int = 16
    downsample_stride: int = 2
    head: str = "avgpool"
    shortcut: str = "identity"
    norm: str = "none"
    zero_init_residual: bool = False
    post_act: bool = True
    kernel_init: str = "glorot_uniform"
    num_classes: int = 10
    dtype: Any = jnp.float32
    compute: Any = None  # a jaxres.config.ComputeConfig (models.from_config sets the run's), or None: the process's
    block: Callable[..., nn.Module] = ResidualBlock

    @nn.compact
    @_with_compute
    def __call__(self, x: jnp.ndarray, train: bool = False, axis_name: str | None = None) -> jnp.ndarray:
        _check_input(x)
        _check_choice("shortcut", self.shortcut, SHORTCUTS)
        _check_choice("head", self.head, HEADS)
        if len(self.widths) != len(self.stage_sizes):
            raise ValueError(f"widths {tuple(self.widths)} and stage_sizes {tuple(self.stage_sizes)} differ in length")
        norm = make_norm(self.norm, train, axis_name, self.dtype)
        inner = self.inner_widths or self.widths
        x = x.astype(self.dtype)
        x = _conv(self.kernel_init)(self.stem_width, (3, 3), padding=PAD, use_bias=norm is None, relu=norm is None,
                                    dtype=self.dtype, name="stem")(x)
        if norm is not None:
            x = norm(self.stem_width, name="stem_norm")(x, relu=True)
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                x = self.block(inner=inner[i], out=self.widths[i],
                               strides=self.downsample_stride if i > 0 and j == 0 else 1,
                               shortcut=self.shortcut, norm=norm, zero_init_residual=self.zero_init_residual,
                               post_act=self.post_act, kernel_init=self.kernel_init, dtype=self.dtype,
                               name=f"stage{i}_block{j}")(x)
        x = x.reshape((x.shape[0], -1)) if self.head == "flatten" else jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, kernel_init=initializer(self.kernel_init), dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------------- presets
def preset(name: str) -> Callable[..., nn.Module]:
    """The network ``jaxres.catalog.PRESETS[name]`` describes, as a constructor taking knobs."""
    if name not in catalog.PRESETS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(catalog.PRESETS)}")
    p = catalog.PRESETS[name]
    return functools.partial(catalog.resolve("model", name), **p.settings)


PRESETS: dict[str, Callable[..., nn.Module]] = {name: preset(name) for name in catalog.PRESETS}
seed_cnn, seed_resnet, seed_plain_twin = PRESETS["seed_cnn"], PRESETS["seed_resnet"], PRESETS["seed_plain_twin"]
resnet20, plain20, resnet56, plain56 = PRESETS["resnet20"], PRESETS["plain20"], PRESETS["resnet56"], PRESETS["plain56"]


def get_model(name: str, **knobs: Any) -> nn.Module:
    """The preset called ``name`` with ``knobs`` (norm, zero_init_residual, dtype, num_classes, ...) set."""
    return preset(name)(**knobs)


def build(spec: Any, num_classes: int, precision: str = "float32", compute: Any = None) -> nn.Module:
    """The Flax module a ``jaxres.config.ModelConfig`` describes, computing in ``precision``
    (``compute.precision``: parameters stay float32 either way), its convolutions and norms traced with
    ``compute`` (a ``ComputeConfig``; None: the process's settings, ``jaxres.conv.settings``)."""
    spec.check()
    if precision not in PRECISIONS:
        raise ConfigError(f"compute.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if spec.name not in catalog.PRESETS:
        return user_network(spec.name, num_classes)
    kw: dict[str, Any] = {"dtype": jnp.dtype(precision), "num_classes": num_classes}
    kw.update({k: getattr(spec, k) for k in ("norm", "shortcut", "kernel_init") if getattr(spec, k) is not None})
    if spec.zero_init_residual:
        kw["zero_init_residual"] = True
    if compute is not None:
        kw["compute"] = compute
    return get_model(spec.name, **kw)


def user_network(path: str, num_classes: int) -> nn.Module:
    """The Linen module of a user's ``jaxres.catalog.Network`` (``model.name="package.module:name"``): its builder's
    module, or, for a Flax NNX class (or ``functools.partial`` of one with keyword settings, e.g. its plain twin's
    ``shortcut=False``), that class bridged to Linen (``flax.nnx.bridge.ToLinen``)."""
    from flax import nnx
    from flax.core import FrozenDict
    from flax.nnx import bridge

    try:
        entry = catalog.network(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cls, settings = entry.builder, {}
    if isinstance(cls, functools.partial) and not cls.args:  # an NNX class with settings: partial(Net, shortcut=False)
        cls, settings = cls.func, dict(cls.keywords)
    if isinstance(cls, type) and issubclass(cls, nnx.Module):
        return UserNetwork(bridge.ToLinen(cls, kwargs=FrozenDict(settings | {"num_classes": num_classes})))  # hashable
    module = entry.builder(num_classes=num_classes)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model.name={path!r}: its builder returned a {type(module).__name__}, not a Flax Linen "
                          "module (or declare a Flax NNX Module class as the builder)")
    return UserNetwork(module)


class UserNetwork(nn.Module):
    """A user's module behind jaxres's calling convention: ``(x, train, axis_name)`` -> float32 logits, where the
    user's takes ``(x, train)`` (the batch-norm axis of several devices is jaxres's own blocks' concern)."""

    inner: nn.Module

    @nn.compact
    def __call__(self, x, train: bool = False, axis_name: str | None = None):
        return jnp.asarray(self.inner(x, train=train), jnp.float32)


def plain_twin_of(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The builder of the same network without its shortcuts, for a network made of jaxres's residual blocks
    (``ResNet``): the same layers and parameters, ``shortcut="none"``. Declare it as the residual one's twin."""
    def build(num_classes: int) -> nn.Module:
        module = builder(num_classes=num_classes)
        if not isinstance(module, ResNet):
            raise ConfigError(f"plain_twin_of: the network is a {type(module).__name__}, not made of jaxres's "
                              "residual blocks (jaxres.models.ResNet); declare its plain twin yourself")
        return module.clone(shortcut="none")
    return build


def from_config(cfg: Any, num_classes: int) -> nn.Module:
    """The model of a run config (``jaxres.config.RunConfig``), computing in ``compute.precision`` and traced
    with its whole compute section (convolution backend and options), whatever the process traced before."""
    return build(cfg.model, num_classes, cfg.compute.precision, cfg.compute)


def knobs(model: nn.Module) -> dict[str, Any]:
    """The settings of a built model (norm, shortcut, init, ...), as JSON-able values, for results files."""
    keys = ("widths", "stage_sizes", "inner_widths", "stem_width", "head", "shortcut", "norm", "zero_init_residual",
            "post_act", "kernel_init", "num_classes", "dtype")
    out = {k: getattr(model, k) for k in keys if hasattr(model, k)}
    return {k: (list(v) if isinstance(v, (tuple, list)) else v if isinstance(v, (int, float, str, bool, type(None)))
                else str(jnp.dtype(v))) for k, v in out.items()}


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    import jax

    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def count_convs(params: Any) -> int:
    """Number of convolution kernels (rank-4 parameters) in a parameter pytree."""
    import jax

    return sum(1 for p in jax.tree_util.tree_leaves(params) if p.ndim == 4)


def model_table(names: Sequence[str] | None = None) -> str:
    """Markdown table of presets: conv layers and parameter counts on MNIST- and CIFAR-shaped input."""
    import jax

    lines = ["| model | conv layers | params, 28x28x1 | params, 32x32x3 |", "| --- | ---: | ---: | ---: |"]
    for name in names or PRESETS:
        counts = []
        for shape in ((1, 28, 28, 1), (1, 32, 32, 3)):
            params = jax.eval_shape(get_model(name).init, jax.random.key(0), jnp.zeros(shape))["params"]
            counts.append(params)
        lines.append(f"| {name} | {count_convs(counts[0])} | {count_params(counts[0]):,} | {count_params(counts[1]):,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(model_table())
