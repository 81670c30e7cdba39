"""Where a train step's time goes, pass by pass: forward, input gradient, kernel gradient, layout reorders,
the optimizer, and the rest (elementwise work, the dense layer, the loss) in XLA.

    python -m benchmarks.onednn_profile --model seed_cnn --shape 32x32x3 [--overlap-grads] [--json out.json]
    python -m benchmarks.onednn_profile --framework keras --model seed_resnet

Runs the step (jaxres's, or Keras's from benchmarks.step_time) in a child process with
ONEDNN_VERBOSE=profile_exec and times ``--steps`` steps after warm-up. oneDNN's own execution time of every
primitive gives the convolution passes (by layer shape) and the layout reorders; the optimizer's update is
timed alone in the same process (jaxres: the same optax Adam on the same parameters, compiled by itself);
what is left of the step is XLA's other work. By default a convolution's two gradients run one after the
other (``JAXRES_CONV_OVERLAP_GRADS=0``) so that the passes add up to the step; ``--overlap-grads`` profiles
the shipped setting, where they run at the same time on one thread each and their times add up to more
than their share of the step. Absolute times are this machine's, this minute's.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "JAXRES_PROFILE_TIMED_STEPS"
PASSES = {"forward_training": "forward", "forward_inference": "forward", "backward_data": "input gradient",
          "backward_weights": "kernel gradient", "backward": "backward"}
MODELS = {"seed_cnn": "none", "seed_resnet": "none", "resnet20": "batch"}


def _child(framework: str, model: str, shape: tuple[int, ...], steps: int, batch: int) -> None:
    import time

    import numpy as np

    def timed(fn, n):  # the mean: oneDNN's times are summed over the same steps
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.mean(times)), float(np.median(times))

    def mark(text: str) -> None:  # oneDNN's verbose lines sit in C's stdout buffer: out before the mark
        libc.fflush(None)
        print(f"{MARK}{text}", flush=True)

    libc = ctypes.CDLL(None)

    optimizer = None
    if framework == "keras":
        from benchmarks import step_time

        _, run = step_time._keras_worker((model, shape, MODELS[model]), batch)
        run(2)
        step = lambda: run(1)  # noqa: E731
    else:
        import jaxres

        jaxres.setup()
        import jax
        import optax

        from jaxres import config, models, optim, train

        state = train.create_train_state(models.get_model(model), jax.random.key(0), shape)
        rng = np.random.default_rng(0)
        b = jax.device_put({"image": rng.random((batch, *shape), np.float32),
                            "label": rng.integers(0, 10, batch).astype(np.int32)})
        train_step, key = train.jit_train_step(), jax.random.key(0)
        holder = {"state": state}

        def step():
            holder["state"], m = train_step(holder["state"], b, key)
            jax.block_until_ready(m)

        for _ in range(3):
            step()
        # the optimizer alone: the step's Adam update and its application, on gradients of the parameters' shapes
        tx = optim.make_optimizer(config.RunConfig())
        params = holder["state"].params
        grads = jax.tree.map(lambda p: np.asarray(rng.standard_normal(p.shape), p.dtype) * 1e-3, params)
        opt = {"params": jax.tree.map(lambda p: p + 0, params), "opt": tx.init(params)}

        @jax.jit
        def update(params, opt_state, grads):
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def opt_step():
            opt["params"], opt["opt"] = update(opt["params"], opt["opt"], grads)
            jax.block_until_ready(opt["params"])

        for _ in range(3):
            opt_step()
        optimizer = timed(opt_step, max(steps, 10))[0]
    mark("")
    mean, median = timed(step, steps)
    mark(f" mean {mean}")
    print(f"{MARK} median {median}", flush=True)
    if optimizer is not None:
        print(f"{MARK} optimizer {optimizer}", flush=True)


def _shape(problem: str) -> str:
    """'mb128_ic64oc32_ih32oh32kh3...' -> '32x32 64->32'."""
    m = re.search(r"ic(\d+)oc(\d+)_ih(\d+)oh\d+kh(\d+)sh(\d+)", problem)
    if not m:
        return problem
    ic, oc, ih, kh, sh = m.groups()
    return f"{ih}x{ih} {ic}->{oc}" + (f" {kh}x{kh}" if kh != "3" else "") + (f" stride {sh}" if sh != "1" else "")


def parse(lines: list[str], steps: int) -> dict[tuple[str, str], float]:
    """(category, detail) -> ms per step from ONEDNN_VERBOSE=profile_exec lines."""
    split: dict[tuple[str, str], float] = defaultdict(float)
    for line in lines:
        if not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        f = line.split(",")
        kind = f[f.index("exec") + 2] if "primitive" in f else f[3]
        ms = float(f[-1]) / steps
        if kind == "convolution":
            what = next((v for v in f if v in PASSES), "")
            split[(PASSES.get(what, what), _shape(f[-2]))] += ms
        elif kind == "reorder":
            split[("layout reorders", "")] += ms
        elif kind in ("batch_normalization", "bnorm"):
            split[("batch norm", next((v for v in f if v in PASSES), ""))] += ms
        else:
            split[(f"other oneDNN ({kind})", "")] += ms
    return split


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=("jaxres", "keras"), default="jaxres")
    p.add_argument("--model", default="seed_cnn", choices=tuple(MODELS))
    p.add_argument("--shape", default="28x28x1")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--overlap-grads", action="store_true",
                   help="profile the shipped setting: a convolution's two gradients at the same time (jaxres)")
    p.add_argument("--json", help="write the split here too")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    parts = args.shape.split("x")
    if len(parts) != 3 or not all(v.isdigit() and int(v) > 0 for v in parts):
        p.error(f"--shape {args.shape!r}: give HxWxC, e.g. 28x28x1")
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be at least 1")
    shape = tuple(int(v) for v in parts)
    if args.child:
        _child(args.framework, args.model, shape, args.steps, args.batch)
        return 0
    env = dict(os.environ, ONEDNN_VERBOSE="profile_exec", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               JAXRES_CONV_OVERLAP_GRADS="1" if args.overlap_grads else "0")
    cmd = [sys.executable, "-m", "benchmarks.onednn_profile", "--child", *(argv if argv is not None else sys.argv[1:])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or MARK not in lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"error: the profiled step failed: {tail}", file=sys.stderr)
        return 1
    start = lines.index(MARK) + 1
    marks = {v.split()[1]: float(v.split()[2]) * 1e3 for v in lines[start:] if v.startswith(MARK)}
    step = marks["mean"]
    end = next(i for i, v in enumerate(lines) if v.startswith(f"{MARK} mean"))
    timed = lines[start:end]
    split = parse(timed, args.steps)
    onednn = sum(split.values())
    rows = sorted(split.items(), key=lambda kv: (list(PASSES.values()).index(kv[0][0])
                                                 if kv[0][0] in PASSES.values() else 9, kv[0][0], -kv[1]))
    if "optimizer" in marks:
        rows.append((("optimizer (Adam, timed alone)", ""), marks["optimizer"]))
    rest = step - sum(ms for _, ms in rows)
    rows.append((("rest in XLA (elementwise, dense, loss)" if args.framework == "jaxres" else "rest (TensorFlow)", ""),
                 rest))
    grads = "at once, one thread each" if args.overlap_grads else "one after the other"
    print(f"{args.framework} {args.model} {args.shape}, batch {args.batch}, gradients {grads}: step {step:.1f} ms "
          f"(mean of {args.steps}; median {marks['median']:.1f}), inside oneDNN {onednn:.1f} ms per step ({onednn / step:.0%} of the step)")
    totals: dict[str, float] = defaultdict(float)
    for (what, detail), ms in rows:
        totals[what] += ms
    for (what, detail), ms in rows:
        print(f"  {what:40s} {detail:16s} {ms:8.1f} ms {ms / step:6.1%}")
    print("  by pass: " + ", ".join(f"{what} {ms:.1f} ms ({ms / step:.0%})" for what, ms in totals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "framework": args.framework, "model": args.model, "shape": args.shape, "batch": args.batch,
            "overlap_grads": args.overlap_grads, "step_ms": step, "median_step_ms": marks["median"], "onednn_ms": onednn,
            "rows": [{"pass": w, "detail": d, "ms": ms, "share": ms / step} for (w, d), ms in rows],
            "by_pass_ms": totals}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
