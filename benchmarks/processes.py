"""What an extra process costs on one machine: the sharded-jit train step on 1 process x 1 device (plain
jit), 1 process x 2 devices and 2 processes x 1 device (collectives over gloo on 127.0.0.1), the same
global batch, timed in alternating rounds so the layouts share the same minutes of a noisy machine.

    python -m benchmarks.processes [--model seed_cnn] [--batch 128] [--steps 20] [--rounds 2] [--json out.json]

Each layout is started afresh per round (its compile is not timed); reported: the median step time
over all rounds of each layout and its ratio to one process with one device.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"1 process x 1 device": (1, 1), "1 process x 2 devices": (1, 2), "2 processes x 1 device": (2, 1)}
SHAPES = {"seed_cnn": (28, 28, 1), "seed_resnet": (28, 28, 1), "resnet20": (32, 32, 3)}


def worker(args: argparse.Namespace) -> None:
    """One process of a layout: join (if several), warm up, time ``--steps`` steps; process 0 prints JSON."""
    import jaxres
    from jaxres import distributed

    jaxres.setup()
    if args.num_processes > 1:
        distributed.initialize(distributed.setup_from(f"127.0.0.1:{args.port}", args.num_processes, args.process_id,
                                                      init_timeout=120))
    import jax
    import numpy as np

    from jaxres import data, models, train

    shape = SHAPES[args.model]
    state = train.create_train_state(models.get_model(args.model), jax.random.key(0), shape)
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((args.batch, *shape), np.float32),
             "label": rng.integers(0, 10, args.batch).astype(np.int32)}
    key = jax.random.key(0)
    if jax.device_count() == 1:
        step = train.jit_train_step()
        b = jax.device_put(batch)
    else:
        mesh = train.make_mesh()
        state, step = train.place(state, mesh), train.sharded_train_step(mesh)
        share = data.process_slice(args.batch, jax.process_index(), jax.process_count())
        b = {k: jax.make_array_from_process_local_data(train.batch_sharding(mesh), v[share]) for k, v in batch.items()}
    for _ in range(3):
        state, m = step(state, b, key)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = step(state, b, key)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    if jax.process_index() == 0:
        print(json.dumps({"times": times, "devices": jax.device_count(), "processes": jax.process_count()}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(processes: int, devices: int, args: argparse.Namespace) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.processes", "--worker", "--model", args.model, "--batch",
           str(args.batch), "--steps", str(args.steps), "--num-processes", str(processes), "--port", str(port)]
    procs = [subprocess.Popen(cmd + ["--process-id", str(i)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for i in range(processes)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"processes: the layout {processes} x {devices} failed (exit {[p.returncode for p in procs]})")
    line = next(line for line in outs[0].splitlines() if line.startswith("{"))
    return json.loads(line)["times"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(SHAPES), default="seed_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    times: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(args.rounds):
        for name, (processes, devices) in LAYOUTS.items():
            times[name] += run_layout(processes, devices, args)
    base = statistics.median(times["1 process x 1 device"])
    print(f"{args.model} {SHAPES[args.model]}, global batch {args.batch}, {args.steps} steps x {args.rounds} rounds")
    print(f"  {'layout':26s} {'median s':>9s} {'p10 s':>7s} {'p90 s':>7s} {'vs 1x1':>7s}")
    rows = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=10)
        med = statistics.median(t)
        rows[name] = {"median_s": med, "p10_s": q[0], "p90_s": q[-1], "over_one_device": med / base}
        print(f"  {name:26s} {med:9.3f} {q[0]:7.3f} {q[-1]:7.3f} {med / base:6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "batch": args.batch, "layouts": rows}, indent=2))


if __name__ == "__main__":
    main()
