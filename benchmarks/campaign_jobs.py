"""How a campaign should use a 2-core machine: one run at a time on both cores, or two runs at once on one
core each (``experiments.campaign --jobs 2``); and, one at a time, a convolution's two gradients at once on
one thread each (``compute.overlap_grads=true``) or one after the other on both (``false``).

    python -m benchmarks.campaign_jobs [--cases 4,5] [--steps 10] [--rounds 3] [--json out.json]

Layouts, each timed on the same train step (``benchmarks.step_time``'s workers, batch 128, float32):
- ``1 job, overlap``: one worker, two OpenMP threads, the gradients at once (the default);
- ``1 job, sequential``: one worker, two OpenMP threads, the gradients one after the other;
- ``2 jobs``: two workers at the same time, each pinned to its own core (``taskset``) with one OpenMP thread.
Rounds alternate the layouts so they share the same minutes of a noisy machine. Reported per layout: the
wall time a pair of runs' steps take (one job: twice its steps one after the other; two jobs: both at once)
as images/s over the pair, and each layout's ratio to ``1 job, overlap``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from benchmarks.step_time import CASES, Worker

LAYOUTS = {"1 job, overlap": ("jaxres",), "1 job, sequential": ("jaxres-sequential-grads",),
           "2 jobs": ("jaxres-omp1", "jaxres-omp1")}


def _pair_seconds(workers: list[Worker], steps: int) -> float:
    """Wall seconds for a pair of runs to take ``steps`` steps each: one worker runs both shares in turn,
    two workers run theirs at the same time."""
    t = time.perf_counter()
    for _ in range(2 // len(workers)):
        for w in workers:
            w.proc.stdin.write(f"run {steps}\n")
            w.proc.stdin.flush()
        for w in workers:
            if not w.proc.stdout.readline():
                raise RuntimeError(f"{w.kind} worker died")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="4,5", help="indices into benchmarks.step_time's CASES (4 resnet20, 5 "
                   "resnet56, both with batch norm)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per run per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    from jaxres import cpu

    host = cpu.host()
    print(f"CPU: {cpu.name(host)}, {host['cpus']} logical CPUs, {', '.join(host['isa']) or 'no AVX2'}")
    print(f"batch {args.batch}, float32, {args.steps} steps per run x 2 runs x {args.rounds} rounds per layout")
    results = {"command": "python -m benchmarks.campaign_jobs " + " ".join(sys.argv[1:] if argv is None else argv),
               "cpu": host, "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "cases": []}
    for idx in (int(i) for i in args.cases.split(",")):
        name, shape, norm = CASES[idx]
        workers = {layout: [Worker(k, args.batch, cpus=str(i) if len(kinds) > 1 else None)
                            for i, k in enumerate(kinds)] for layout, kinds in LAYOUTS.items()}
        try:
            for ws in workers.values():
                for w in ws:
                    w.ask(f"setup {idx}")  # builds, compiles and warms up
            walls = {layout: [] for layout in LAYOUTS}
            for _ in range(args.rounds):
                for layout, ws in workers.items():
                    walls[layout].append(_pair_seconds(ws, args.steps))
        finally:
            for ws in workers.values():
                for w in ws:
                    w.close()
        base = statistics.median(walls["1 job, overlap"])
        print(f"\n{name} {'x'.join(map(str, shape))} norm={norm}: a pair of runs, {args.steps} steps each")
        print(f"  {'layout':<20} {'median s':>9} {'min s':>7} {'max s':>7} {'img/s':>7} {'vs 1 job, overlap':>18}")
        case = {"model": name, "shape": shape, "norm": norm, "layouts": {}}
        for layout, w in walls.items():
            med = statistics.median(w)
            ips = 2 * args.steps * args.batch / med
            print(f"  {layout:<20} {med:9.2f} {min(w):7.2f} {max(w):7.2f} {ips:7.0f} {base / med:17.2f}x")
            case["layouts"][layout] = {"seconds": w, "median_s": med, "images_per_s": ips, "speedup": base / med}
        results["cases"].append(case)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
