"""Winograd's minimal filtering for stride-1 3x3 convolutions, F(m x m, 3 x 3), in plain XLA (any backend).

Lavin & Gray (2016), "Fast algorithms for convolutional neural networks": the output is cut into m x m
tiles; each tile's (m + 2) x (m + 2) input patch d and the 3x3 kernel g are transformed,
V = B^T d B and U = G g G^T, multiplied elementwise and summed over input channels (for each of the
(m + 2)^2 positions one GEMM, the batched GEMM that does the work), and transformed back, Y = A^T M A.
F(4x4, 3x3) does 36 multiplies per output tile and channel pair where the direct convolution does
144 (4x fewer); F(2x2, 3x3) 16 against 36 (2.25x fewer). The price is memory traffic: the transformed
input V is (m + 2)^2 / m^2 times the input (2.25x for m=4, 4x for m=2), and each transform is a pass over
memory, so Winograd wins where the direct convolution is far from the CPU's peak (an AVX2 CPU) and loses
where a library runs it near the peak (oneDNN on AVX-512: docs/benchmarks.md).

Gradients (``jax.custom_vjp``): the input gradient is itself a stride-1 3x3 convolution (of the output
gradient, padded by 2 - padding, with the kernel turned by 180 degrees and its channels swapped), done by
the same algorithm; the kernel gradient is the exact gradient of the Winograd forward with respect to the
kernel, dW = G^T [sum over tiles of V * (A dY A^T)] G: one GEMM per position, summing over every tile of
the batch, with the same saving of multiplies. Forward mode is not defined (use ``compute.conv=xla``).

Rounding: the transforms' coefficients (up to 8 and 1/24 for m=4) lose a few bits against the direct sum;
measured against ``lax.conv_general_dilated`` in float64 (``tests/test_winograd.py``). bfloat16 is left to
the direct path (``eligible``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MIN_CHANNELS = 16  # below this the GEMMs are too thin to pay for the transforms (the networks' first layer)
TILE = 4           # F(4x4, 3x3): chosen by measurement (docs/benchmarks.md); 2 is the other one defined
# (B^T, G, A^T) of F(m, 3), Lavin & Gray's points 0, +-1, +-2 (m=4) and 0, +-1 (m=2)
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)),
}
DTYPES = ("float32", "float64")


def eligible(x_shape, w_shape, dtype, strides, pads) -> bool:
    """Whether ``conv`` takes this NHWC x / HWIO w convolution: stride 1, a 3x3 kernel, at least
    ``MIN_CHANNELS`` input channels, padding of 0-2 on each side, float32 or float64, a non-empty output."""
    if len(x_shape) != 4 or tuple(w_shape[:2]) != (3, 3) or tuple(strides) != (1, 1):
        return False
    if x_shape[-1] < MIN_CHANNELS or jnp.dtype(dtype).name not in DTYPES:
        return False
    if any(not 0 <= p <= 2 for pair in pads for p in pair):
        return False
    return all(size + lo + hi >= 3 for size, (lo, hi) in zip(x_shape[1:3], pads))


def _combine(parts, matrix):
    """[sum_i matrix[k, i] * parts[i] for each row k], skipping zero coefficients (XLA fuses each row)."""
    return [sum(float(c) * p for c, p in zip(row, parts) if c != 0) for row in matrix]


def _strided(z, start: int, count: int, step: int, axis: int):
    return lax.slice_in_dim(z, start, start + step * (count - 1) + 1, step, axis=axis)


def input_transform(xp, m: int, tiles: tuple[int, int]):
    """V = B^T d B for every (m + 2)^2 tile d of the padded NHWC input: shape ((m+2)^2, N*Th*Tw, C)."""
    bt = TRANSFORMS[m][0]
    a, (th, tw) = m + 2, tiles
    n, c = xp.shape[0], xp.shape[-1]
    rows = _combine([_strided(xp, i, th, m, 1) for i in range(a)], bt)          # each (N, Th, Wp, C)
    vh = jnp.stack(rows, 2)                                                      # (N, Th, a, Wp, C)
    v = jnp.stack(_combine([_strided(vh, j, tw, m, 3) for j in range(a)], bt), 3)  # (N, Th, a, a, Tw, C)
    return v.transpose(2, 3, 0, 1, 4, 5).reshape(a * a, n * th * tw, c)


def kernel_transform(w, m: int):
    """U = G g G^T for every input/output channel pair of the HWIO kernel: ((m+2)^2, Ci, Co)."""
    g = TRANSFORMS[m][1].astype(w.dtype)
    a = m + 2
    return jnp.einsum("ki,ijco,lj->klco", g, w, g).reshape(a * a, w.shape[2], w.shape[3])


def output_transform(mm, m: int, n: int, tiles: tuple[int, int]):
    """Y = A^T M A for every tile of the GEMMs' result ((m+2)^2, N*Th*Tw, Co): NHWC (N, Th*m, Tw*m, Co)."""
    at = TRANSFORMS[m][2]
    a, (th, tw) = m + 2, tiles
    o = mm.shape[-1]
    mm = mm.reshape(a, a, n, th, tw, o)
    cols = jnp.stack(_combine([mm[:, j] for j in range(a)], at), 1)   # (a, m, N, Th, Tw, Co)
    y = jnp.stack(_combine([cols[i] for i in range(a)], at), 0)       # (m, m, N, Th, Tw, Co)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, th * m, tw * m, o)


def output_transform_transposed(dy, m: int, tiles: tuple[int, int]):
    """The transpose of ``output_transform``: dM = A dY A^T for every m x m tile of dy (N, Th*m, Tw*m, Co)."""
    at = TRANSFORMS[m][2]
    a, (th, tw) = m + 2, tiles
    n, o = dy.shape[0], dy.shape[-1]
    t = dy.reshape(n, th, m, tw, m, o)
    rows = jnp.stack(_combine([t[:, :, i] for i in range(m)], at.T), 0)        # (a, N, Th, Tw, m, Co)
    d = jnp.stack(_combine([rows[:, :, :, :, j] for j in range(m)], at.T), 1)  # (a, a, N, Th, Tw, Co)
    return d.reshape(a * a, n * th * tw, o)


def _geometry(x_shape, pads, m: int):
    """Output size, tile counts and the padding that makes the input cover every tile's patch."""
    (lo_h, hi_h), (lo_w, hi_w) = pads
    oh, ow = x_shape[1] + lo_h + hi_h - 2, x_shape[2] + lo_w + hi_w - 2
    th, tw = -(-oh // m), -(-ow // m)
    full = ((lo_h, th * m + 2 - x_shape[1] - lo_h), (lo_w, tw * m + 2 - x_shape[2] - lo_w))
    return (oh, ow), (th, tw), full


def _pad(x, full):
    return jnp.pad(x, ((0, 0), *full, (0, 0)))


def _forward(x, w, pads, m):
    (oh, ow), tiles, full = _geometry(x.shape, pads, m)
    v = input_transform(_pad(x, full), m, tiles)
    mm = lax.dot_general(v, kernel_transform(w, m), (((2,), (1,)), ((0,), (0,))))  # ((m+2)^2, P, Co)
    return output_transform(mm, m, x.shape[0], tiles)[:, :oh, :ow], v


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, w, pads, m: int = TILE):
    """The stride-1 convolution of NHWC ``x`` by the HWIO 3x3 kernel ``w`` with explicit ``pads``
    ((top, bottom), (left, right)), by F(m x m, 3 x 3): what ``lax.conv_general_dilated`` computes, up to
    rounding. Call it where ``eligible`` says so."""
    return _forward(x, w, pads, m)[0]


def _conv_fwd(x, w, pads, m):
    y, v = _forward(x, w, pads, m)
    return y, (v, w, x.shape)


def _conv_bwd(pads, m, res, dy):
    v, w, x_shape = res
    (oh, ow), (th, tw), _ = _geometry(x_shape, pads, m)
    # kernel gradient: dU = sum over tiles of V * dM, one GEMM per position; dW = G^T dU G
    dyt = jnp.pad(dy, ((0, 0), (0, th * m - oh), (0, tw * m - ow), (0, 0)))
    dm = output_transform_transposed(dyt, m, (th, tw))
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))))  # ((m+2)^2, Ci, Co)
    g = TRANSFORMS[m][1].astype(du.dtype)
    a = m + 2
    dw = jnp.einsum("ki,klco,lj->ijco", g, du.reshape(a, a, *du.shape[1:]), g)
    # input gradient: the full correlation of dy with the kernel turned by 180 degrees, channels swapped
    back = tuple((2 - lo, 2 - hi) for lo, hi in pads)
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    if eligible(dy.shape, w_t.shape, dy.dtype, (1, 1), back):
        dx = conv(dy, w_t, back, m)
    else:
        dx = lax.conv_general_dilated(dy, w_t, (1, 1), back, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return dx[:, :x_shape[1], :x_shape[2]].astype(dy.dtype), dw.astype(w.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)
