"""Where a train step's time goes: oneDNN's own execution times against the step's wall time.

    python -m benchmarks.onednn_profile --framework jaxres --model seed_cnn --shape 28x28x1

Runs the step (jaxres's, or Keras's from benchmarks.step_time) in a child process with
ONEDNN_VERBOSE=profile_exec, times ``--steps`` steps after warm-up, and prints the median step time,
the oneDNN time per step and its split by primitive and pass. A sum above the step time means that
the framework ran oneDNN calls at the same time. Absolute times are this machine's, this minute's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "JAXRES_PROFILE_TIMED_STEPS"


def _child(framework: str, model: str, shape: tuple[int, ...], steps: int, batch: int) -> None:
    import time

    import numpy as np

    if framework == "keras":
        from benchmarks import step_time

        _, run = step_time._keras_worker((model, shape, "none"), batch)
        run(2)
    else:
        import jaxres

        jaxres.setup()
        import jax

        from jaxres import models, train

        state = train.create_train_state(models.get_model(model), jax.random.key(0), shape)
        rng = np.random.default_rng(0)
        b = jax.device_put({"image": rng.random((batch, *shape), np.float32),
                            "label": rng.integers(0, 10, batch).astype(np.int32)})
        step, key = train.jit_train_step(), jax.random.key(0)
        holder = {"state": state}

        def run(n):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                holder["state"], m = step(holder["state"], b, key)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t)
            return times
        run(3)
    print(MARK, flush=True)
    print(f"{MARK} median {float(np.median(run(steps)))}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=("jaxres", "keras"), default="jaxres")
    p.add_argument("--model", default="seed_cnn", choices=("seed_cnn", "seed_resnet"))
    p.add_argument("--shape", default="28x28x1")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
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
    env = dict(os.environ, ONEDNN_VERBOSE="profile_exec", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "benchmarks.onednn_profile", "--child", *(argv if argv is not None else sys.argv[1:])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or MARK not in lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"error: the profiled step failed: {tail}", file=sys.stderr)
        return 1
    timed = lines[lines.index(MARK) + 1:]
    median = next(float(v.split()[-1]) for v in timed if v.startswith(f"{MARK} median"))
    split: dict[tuple[str, str], float] = defaultdict(float)
    for line in timed:
        f = line.split(",")
        if line.startswith("onednn_verbose") and ",exec," in line:
            kind = f[f.index("exec") + 2] if "primitive" in f else f[3]
            what = f[-2] if kind in ("gemm_api",) else next((v for v in f if v in (
                "forward_training", "forward_inference", "backward_data", "backward_weights", "backward")), "")
            split[(kind, what)] += float(f[-1]) / args.steps
    total = sum(split.values())
    print(f"{args.framework} {args.model} {args.shape}, batch {args.batch}: step {median * 1e3:.1f} ms (median of "
          f"{args.steps}), inside oneDNN {total:.1f} ms per step ({total / (median * 1e3):.0%} of the step)")
    for (kind, what), ms in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:14s} {what:20s} {ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
