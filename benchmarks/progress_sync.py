"""What the progress bar's honesty costs: ``train.train_epoch`` with the bar counting steps as they finish (the
host waits for step k-1 after dispatching step k, ``train._Finished``) against the bar counting them as they are
dispatched (no wait until the epoch's end), on the same compiled step and batches, in alternating rounds.

    python -m benchmarks.progress_sync [--model resnet20] [--steps 24] [--rounds 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

MODELS = {"seed_cnn": ((32, 32, 3), "none"), "resnet20": ((32, 32, 3), "batch")}


class _Random:
    """A batch source of ``steps`` random batches already on the device (the input side costs nothing)."""

    n_devices, process_count = 1, 1

    def __init__(self, batches):
        self.batches = batches

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def train_batches(self, epoch, rng=None, start=0):
        return iter(self.batches[start:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", choices=list(MODELS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=24, help="steps per epoch")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args(argv)
    import jaxres

    jaxres.setup()
    import jax
    import numpy as np

    from jaxres import cpu, models, train

    shape, norm = MODELS[args.model]
    model = models.get_model(args.model, norm=norm)
    rng = np.random.default_rng(0)
    batches = [jax.device_put({"image": rng.random((args.batch, *shape), np.float32),
                               "label": rng.integers(0, 10, args.batch).astype(np.int32)}) for _ in range(args.steps)]
    data, streams = _Random(batches), train.Streams.from_seed(0)
    state = train.create_train_state(model, streams.init, shape)
    step = train.jit_train_step(layer_norms_every=10)
    state, _, _ = train.train_epoch(state, step, data, 0, streams, progress=False)  # compile, warm up
    real = train._Finished.dispatched

    def dispatched_only(self, marker):  # the bar as before: a step counts when it is dispatched
        self.bar.update(1)

    times = {"as steps finish": [], "as steps are dispatched": []}
    for _ in range(args.rounds):
        for label, counting in (("as steps finish", real), ("as steps are dispatched", dispatched_only)):
            train._Finished.dispatched = counting
            t = time.perf_counter()
            state, m, _ = train.train_epoch(state, step, data, 0, streams, progress=True)
            jax.block_until_ready(state.params)
            times[label].append(time.perf_counter() - t)
    train._Finished.dispatched = real
    host = cpu.host()
    print(f"CPU: {cpu.name(host)}, {host['cpus']} logical CPUs, {', '.join(host['isa'])}", file=sys.stderr)
    print(f"{args.model}, batch {args.batch}, {args.steps} steps an epoch, {args.rounds} rounds", file=sys.stderr)
    base = statistics.median(times["as steps are dispatched"])
    for label, t in times.items():
        med = statistics.median(t)
        print(f"  bar counts {label:<24} median epoch {med:.3f} s (min {min(t):.3f}, max {max(t):.3f}), "
              f"{med / base:.3f}x", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m benchmarks.progress_sync " + " ".join(sys.argv[1:] if argv is None
                                                                                else argv),
                       "cpu": host, "model": args.model, "batch": args.batch, "steps": args.steps, "times": times}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
