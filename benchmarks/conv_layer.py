"""Per-convolution profile of a train step's pieces: forward, input gradient, kernel gradient.

    python -m benchmarks.conv_layer [--batch 128] [--reps 10] [--json out.json]

For 3x3 SAME convolutions of the seed networks' shapes, times (median of --reps, after warm-up)
each piece on its own under ``jax.jit``: the forward convolution, the input gradient, the kernel
gradient by XLA's own rule, the same convolution with its operands already in the layouts it
wants (so the difference is the transposes), the kernel gradient computed the other way round
(``jaxres.conv.kernel_gradient_swapped``, for every shape; the ``xla-swapped`` backend uses it where
more channels go in than out), and the three passes through jaxres's oneDNN handlers (the CPU
default, ``jaxres.onednn``), then both gradients one after the other and at the same time on one
thread each (jaxres's default on two OpenMP threads). With PyTorch installed, its forward, input and kernel
gradients, and both in one call (oneDNN
on CPU, through ``aten.convolution_backward`` as autograd calls it) on the same shapes,
channels-last. Run it under ``taskset -c 0`` to see the one-core figures.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jaxres

jaxres.setup()  # the CPU fast path and kept memory, before JAX starts

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxres import conv

SHAPES = [(28, 64, 32), (28, 32, 64), (32, 64, 32), (32, 32, 64), (32, 3, 64)]  # (image side, channels in, out)
DN = ("NHWC", "HWIO", "NHWC")


def _median_ms(fn, reps):
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def _jax_pieces(x, w, dy):
    fwd = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
    pieces = {
        "forward": (fwd, (x, w)),
        "input gradient": (lambda x, w, dy: jax.vjp(lambda x: fwd(x, w), x)[1](dy)[0], (x, w, dy)),
        "kernel gradient, XLA": (lambda x, w, dy: jax.vjp(lambda w: fwd(x, w), w)[1](dy)[0], (x, w, dy)),
        "  of which the convolution": (  # what XLA runs after transposing x and dy (see the HLO)
            lambda xt, dyt: lax.conv_general_dilated(xt, dyt, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN),
            (x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3))),
        "kernel gradient, swapped order": (
            lambda x, dy: conv.kernel_gradient_swapped(x, dy, (3, 3), ((1, 1), (1, 1))), (x, dy)),
    }
    from jaxres import onednn

    if onednn.load()[0]:  # jaxres's oneDNN handlers, through the XLA FFI (jaxres.conv's CPU default)
        s, p = (1, 1), ((1, 1), (1, 1))
        pieces["oneDNN forward"] = (lambda x, w: onednn.forward(x, w, s, p), (x, w))
        pieces["oneDNN input gradient"] = (lambda w, dy: onednn.input_grad(dy, w, x.shape, s, p), (w, dy))
        pieces["oneDNN kernel gradient"] = (lambda x, dy: onednn.kernel_grad(x, dy, w.shape, s, p), (x, dy))
        pieces["oneDNN both gradients"] = (  # one after the other, all threads each (JAXRES_CONV_OVERLAP_GRADS=0)
            lambda x, w, dy: (onednn.input_grad(dy, w, x.shape, s, p), onednn.kernel_grad(x, dy, w.shape, s, p)),
            (x, w, dy))
        pieces["oneDNN both gradients at once"] = (  # one thread each where there are two (the default)
            lambda x, w, dy: onednn.backward(x, w, dy, s, p, bias=False), (x, w, dy))
    from jaxres import winograd

    if winograd.eligible(x.shape, w.shape, x.dtype, (1, 1), ((1, 1), (1, 1))):  # jaxres.winograd, plain XLA
        for m in sorted(winograd.TRANSFORMS):
            f = functools.partial(lambda m, x, w: winograd.conv(x, w, ((1, 1), (1, 1)), m), m)
            pieces[f"Winograd F({m}x{m},3x3) forward"] = (f, (x, w))
            # each piece alone (XLA drops what its result does not need): the kernel gradient includes the
            # input transform, which a train step shares with the forward pass
            pieces[f"Winograd F({m}x{m},3x3) input gradient"] = (
                functools.partial(lambda f, x, w, dy: jax.vjp(lambda x: f(x, w), x)[1](dy)[0], f), (x, w, dy))
            pieces[f"Winograd F({m}x{m},3x3) kernel gradient"] = (
                functools.partial(lambda f, x, w, dy: jax.vjp(lambda w: f(x, w), w)[1](dy)[0], f), (x, w, dy))
            pieces[f"Winograd F({m}x{m},3x3) both gradients"] = (
                functools.partial(lambda f, x, w, dy: jax.vjp(f, x, w)[1](dy), f), (x, w, dy))
    return pieces


def _torch_pieces(x, w, dy):
    try:
        import torch
    except ImportError:
        return {}

    torch.set_num_threads(os.cpu_count() or 1)
    cl = torch.channels_last
    tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    tw = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous()
    tdy = torch.from_numpy(np.array(dy)).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    def backward(mask):  # the op autograd calls for a convolution's backward
        return lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, None, [1, 1], [1, 1], [1, 1], False,
                                                           [0, 0], 1, mask)

    return {
        "PyTorch forward": lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
        "PyTorch input gradient": backward([True, False, False]),
        "PyTorch kernel gradient": backward([False, True, False]),
        "PyTorch both gradients": backward([True, True, False]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--only", help="time only the pieces whose name contains one of these comma-separated words")
    p.add_argument("--shapes", help="comma-separated indices into SIDExIN->OUT: " + ", ".join(
        f"{i}={s}x{s} {a}->{b}" for i, (s, a, b) in enumerate(SHAPES)))
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    words = [v.strip() for v in args.only.split(",")] if args.only else None
    keep = lambda name: words is None or any(v in name for v in words)  # noqa: E731
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    for side, cin, cout in shapes:
        x = jnp.asarray(rng.random((args.batch, side, side, cin), np.float32))
        w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)).astype(np.float32) * 0.1)
        dy = jnp.asarray(rng.random((args.batch, side, side, cout), np.float32))
        gflop = 2 * args.batch * side * side * 9 * cin * cout / 1e9
        print(f"\n{args.batch}x{side}x{side}, {cin} -> {cout} channels, {gflop:.2f} GFLOP per piece")
        timings = {}
        for name, (fn, operands) in _jax_pieces(x, w, dy).items():
            if not keep(name):
                continue
            f = jax.jit(fn)
            timings[name] = _median_ms(lambda: jax.block_until_ready(f(*operands)), args.reps)
        for name, fn in _torch_pieces(x, w, dy).items():
            if not keep(name):
                continue
            timings[name] = _median_ms(fn, args.reps)
        for name, ms in timings.items():  # "both gradients": two pieces' work
            print(f"  {name:32} {ms:8.1f} ms {gflop * (2 if 'both' in name else 1) / ms * 1e3:8.1f} GFLOP/s")
        rows.append({"side": side, "in": cin, "out": cout, "batch": args.batch, "gflop": gflop, "ms": timings})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
