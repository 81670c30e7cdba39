"""oneDNN convolutions for JAX's CPU backend, through the XLA foreign function interface.

``jaxres/_onednn/conv.cc`` is glue around oneDNN (the library PyTorch and TensorFlow run CPU
convolutions with): XLA FFI handlers for the forward pass (plain, or with the bias, a residual
block's shortcut and a ReLU as oneDNN post-ops), the input gradient and the kernel gradient (alone,
or with the bias gradient), both gradients in one call, for NHWC activations and HWIO kernels, any stride, explicit padding,
float32, and bfloat16 where the CPU has oneDNN's bfloat16 convolutions (``dtypes()``). ``pip install``
builds it (``setup.py``, an optional extension: where it cannot be built, nothing fails), against
oneDNN 3.2 (``onednn-cpu-gomp``, OpenMP threads: the default) or the current oneDNN (``onednn``, 3.13, a
SYCL build with TBB threads, as ``_onednn_conv_current``: ``make onednn-current``). ``load()`` loads the
installed oneDNN package's library by its path, then the extension built against it, creates
oneDNN's CPU engine once, and registers the handlers for the "cpu" platform; where any of that fails,
it says why in one line and jaxres uses XLA's convolutions. oneDNN's SYCL build finds its CPU device
through the OpenCL runtime installed beside it: ``load()`` points ``OCL_ICD_FILENAMES`` and
``UR_ADAPTERS_FORCE_LOAD`` there unless they are set. ``jaxres.conv`` decides where these functions are used.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

HANDLERS = {"forward": "jaxres_onednn_conv_forward", "input_grad": "jaxres_onednn_conv_input_grad",
            "kernel_grad": "jaxres_onednn_conv_kernel_grad", "bias_forward": "jaxres_onednn_conv_bias_forward",
            "kernel_bias_grad": "jaxres_onednn_conv_kernel_bias_grad",
            "bias_add_forward": "jaxres_onednn_conv_bias_add_forward", "backward": "jaxres_onednn_conv_backward",
            "bias_backward": "jaxres_onednn_conv_bias_backward", "norm_forward": "jaxres_onednn_norm_forward",
            "norm_add_forward": "jaxres_onednn_norm_add_forward", "norm_backward": "jaxres_onednn_norm_backward",
            "norm_relu_backward": "jaxres_onednn_norm_relu_backward"}
DTYPES = ("float32", "bfloat16")  # bfloat16 where this CPU has it (``dtypes()``)
EXTENSION_DIR = Path(__file__).parent  # where pip builds _onednn_conv*.so
PACKAGES = {"onednn-cpu-gomp": "_onednn_conv", "onednn": "_onednn_conv_current"}  # package -> its extension's name
RUNTIMES = {1: "sequential", 2: "OpenMP", 4: "TBB", 8: "threadpool", 512: "SYCL"}  # dnnl_version().cpu_runtime


def _package() -> str:
    """The oneDNN package installed here: 3.2's (onednn-cpu-gomp) where it is, else the current one (onednn).
    They cannot share an environment: both install lib/libdnnl.so.3."""
    for dist in PACKAGES:
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    return next(iter(PACKAGES))


def _libdnnl() -> Path | None:
    """Where pip put the oneDNN library the extension links to: in the environment's lib/, not in site-packages."""
    dist = _package()
    try:
        for f in metadata.files(dist) or ():
            if f.name == "libdnnl.so.3":  # the name the extension asks for
                path = Path(f.locate()).resolve()
                if path.is_file():
                    return path
    except metadata.PackageNotFoundError:
        pass
    path = Path(sys.prefix) / "lib" / "libdnnl.so.3"
    return path if path.is_file() else None


def _load_global(lib: Path, depth: int = 0) -> ctypes.CDLL:
    """``lib`` loaded for every later library to link to; a dependency it names that the loader cannot find
    is loaded first from ``lib``'s own folder (the current oneDNN's runtimes sit beside it, without a RUNPATH)."""
    try:
        return ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        missing = str(e).split(":")[0].strip()
        if depth > 20 or missing == str(lib) or not (lib.parent / missing).is_file():
            raise
        _load_global(lib.parent / missing, depth + 1)
        return _load_global(lib, depth + 1)


def _sycl_environment(lib: Path) -> None:
    """oneDNN's SYCL build needs a SYCL CPU device: Intel's OpenCL CPU runtime and Unified Runtime's OpenCL
    adapter, installed beside it; they are found through these variables (a user's own settings win)."""
    for var, name in (("OCL_ICD_FILENAMES", "libintelocl.so"), ("UR_ADAPTERS_FORCE_LOAD", "libur_adapter_opencl.so")):
        if (lib.parent / name).is_file():
            os.environ.setdefault(var, str(lib.parent / name))


@functools.cache
def load() -> tuple[bool, str]:
    """(True, what was loaded) once the handlers are registered; (False, why not) otherwise."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False, f"oneDNN convolutions are built for x86-64 Linux only, not {sys.platform} {platform.machine()}"
    ext = next(iter(sorted(EXTENSION_DIR.glob(f"{PACKAGES[_package()]}.*so"))), None)
    if ext is None:
        return False, (f"jaxres's oneDNN extension for {_package()} was not built at install time (no C++ compiler "
                       "or no oneDNN?)")
    lib = _libdnnl()
    if lib is None:
        return False, f"oneDNN's library ({_package()}) is not installed"
    try:
        if _package() == "onednn":
            _sycl_environment(lib)
        dnnl = _load_global(lib)  # before the extension, which links to it
        handlers = ctypes.CDLL(str(ext))
        handlers.jaxres_onednn_probe.restype = ctypes.c_char_p
        failed = handlers.jaxres_onednn_probe()  # oneDNN's CPU engine and a stream, or why not
        if failed:
            return False, f"oneDNN {_version(dnnl)} has no CPU engine here ({failed.decode(errors='replace')})"
        for name, symbol in HANDLERS.items():
            jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(handlers, symbol)), platform="cpu")
        _supported.extend(DTYPES if handlers.jaxres_onednn_bf16_supported() else DTYPES[:1])
        _at_once.append(bool(handlers.jaxres_onednn_grads_at_once()))
    except (OSError, AttributeError) as e:
        return False, f"jaxres's oneDNN extension could not be loaded ({e})"
    _loaded.append(_version(dnnl))
    threads = f"{_threads()} OpenMP threads" if _runtime(dnnl) == "OpenMP" else f"{_runtime(dnnl)} runtime"
    _loaded.append(str(lib))
    return True, f"oneDNN {_loaded[0]}, {threads}, {'/'.join(_supported)}"


_supported: list[str] = []
_at_once: list[bool] = []
_loaded: list[str] = []


def version() -> str | None:
    """The version of the oneDNN library the handlers run on ("3.2.0"), None where it did not load."""
    return _loaded[0] if load()[0] else None


def library() -> str | None:
    """The path of the oneDNN library the handlers run on, None where it did not load."""
    return _loaded[1] if load()[0] else None


def grads_at_once() -> bool:
    """Whether ``backward`` runs its two gradients at the same time here (exactly two OpenMP threads)."""
    return load()[0] and _at_once[0]


def dtypes() -> tuple[str, ...]:
    """The dtypes oneDNN convolves on this CPU (bfloat16 only where it has all three passes for it)."""
    return tuple(_supported) if load()[0] else ()


class _Version(ctypes.Structure):  # dnnl_version_t
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def _dnnl_version(dnnl: ctypes.CDLL) -> _Version:
    dnnl.dnnl_version.restype = ctypes.POINTER(_Version)
    return dnnl.dnnl_version().contents


def _version(dnnl: ctypes.CDLL) -> str:
    v = _dnnl_version(dnnl)
    return f"{v.major}.{v.minor}.{v.patch}"


def _runtime(dnnl: ctypes.CDLL) -> str:
    code = _dnnl_version(dnnl).cpu_runtime
    return RUNTIMES.get(code, f"runtime {code}")


def _threads() -> int:
    try:
        return ctypes.CDLL("libgomp.so.1").omp_get_max_threads()
    except (OSError, AttributeError):
        return os.cpu_count() or 1


def _attrs(strides, pads) -> dict[str, np.int64]:
    (pt, pb), (pl, pr) = pads
    return {"stride_h": np.int64(strides[0]), "stride_w": np.int64(strides[1]), "pad_top": np.int64(pt),
            "pad_bottom": np.int64(pb), "pad_left": np.int64(pl), "pad_right": np.int64(pr)}


def output_shape(x_shape, w_shape, strides, pads) -> tuple[int, int, int, int]:
    n, h, w, _ = x_shape
    kh, kw, _, o = w_shape
    (pt, pb), (pl, pr) = pads
    return n, (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1, o


def _call(handler: str, shape, dtype, *operands, strides, pads, **attrs):
    out = ([jax.ShapeDtypeStruct(tuple(s), dtype) for s in shape] if isinstance(shape, list)
           else jax.ShapeDtypeStruct(tuple(shape), dtype))
    return _ffi(handler, out, *operands, **_attrs(strides, pads), **{k: np.int64(v) for k, v in attrs.items()})


def _ffi(handler: str, out, *operands, **attrs):
    # vmap: one call per element ("sequential"), correct for any batched operand
    return jax.ffi.ffi_call(HANDLERS[handler], out, vmap_method="sequential")(*operands, **attrs)


def forward(x, w, strides, pads):
    """y = conv(x, w): NHWC x, HWIO w."""
    return _call("forward", output_shape(x.shape, w.shape, strides, pads), x.dtype, x, w, strides=strides, pads=pads)


def bias_forward(x, w, b, strides, pads, relu: bool):
    """y = conv(x, w) + b, then max(y, 0) if ``relu``, in one pass over y (oneDNN's post-op)."""
    return _call("bias_forward", output_shape(x.shape, w.shape, strides, pads), x.dtype, x, w, b,
                 strides=strides, pads=pads, relu=int(relu))


def bias_add_forward(x, w, b, s, strides, pads, relu: bool):
    """y = conv(x, w) + b + s (s of y's shape: a residual block's shortcut), then max(y, 0) if ``relu``,
    in one pass over y (oneDNN's binary and eltwise post-ops)."""
    return _call("bias_add_forward", output_shape(x.shape, w.shape, strides, pads), x.dtype, x, w, b, s,
                 strides=strides, pads=pads, relu=int(relu))


def input_grad(dy, w, x_shape, strides, pads):
    """dL/dx of y = conv(x, w), given dL/dy."""
    return _call("input_grad", x_shape, dy.dtype, dy, w, strides=strides, pads=pads)


def kernel_grad(x, dy, w_shape, strides, pads):
    """dL/dw of y = conv(x, w), given dL/dy."""
    return _call("kernel_grad", w_shape, x.dtype, x, dy, strides=strides, pads=pads)


def kernel_bias_grad(x, dy, w_shape, strides, pads):
    """(dL/dw, dL/db) of y = conv(x, w) + b, given dL/dy: the bias gradient in the same pass over dy."""
    return tuple(_call("kernel_bias_grad", [w_shape, w_shape[-1:]], x.dtype, x, dy, strides=strides, pads=pads))


def backward(x, w, dy, strides, pads, bias: bool):
    """(dL/dx, dL/dw), and dL/db if ``bias``, of y = conv(x, w) [+ b] in one call: the input and the kernel
    gradient at the same time on one thread each where OpenMP has exactly two (``grads_at_once()``),
    else one after the other on all threads."""
    shapes = [x.shape, w.shape, w.shape[-1:]] if bias else [x.shape, w.shape]
    return tuple(_call("bias_backward" if bias else "backward", shapes, x.dtype, x, w, dy, strides=strides, pads=pads))


# ------------------------------------------------------------------ batch normalization (training) and ReLU
def _norm_out(x, extra: int = 0):
    c = jax.ShapeDtypeStruct(x.shape[-1:], np.float32)
    return [jax.ShapeDtypeStruct(x.shape, x.dtype), c, c] + [jax.ShapeDtypeStruct(x.shape, x.dtype)] * extra


def norm_forward(x, scale, shift, eps: float, relu: bool):
    """(y, mean, var): batch normalization of NHWC ``x`` over N, H, W with the batch's mean and biased variance,
    y = (x - mean) / sqrt(var + eps) * scale + shift, then max(y, 0) if ``relu``, in one oneDNN pass over y.
    scale, shift, mean and var are float32 per channel; y has x's dtype."""
    return tuple(_ffi("norm_forward", _norm_out(x), x, scale, shift, eps=np.float32(eps), relu=np.int64(relu)))


def norm_add_forward(x, scale, shift, s, eps: float):
    """(max(norm(x) + s, 0), mean, var): a residual block's end after its last normalization, ``s`` of x's shape."""
    return tuple(_ffi("norm_add_forward", _norm_out(x), x, scale, shift, s, eps=np.float32(eps)))


def norm_backward(x, dy, scale, mean, var, eps: float):
    """(dx, dscale, dshift) of ``norm_forward`` without the ReLU, given dy."""
    return tuple(_ffi("norm_backward", _norm_out(x), x, dy, scale, mean, var, eps=np.float32(eps)))


def norm_relu_backward(x, y, dy, scale, mean, var, eps: float):
    """(dx, dscale, dshift, dz) of a normalization followed by a ReLU (with or without an addition), given its
    output y and dy: dz = dy where y > 0, else 0, is also the gradient of the added tensor."""
    return tuple(_ffi("norm_relu_backward", _norm_out(x, 1), x, y, dy, scale, mean, var, eps=np.float32(eps)))

