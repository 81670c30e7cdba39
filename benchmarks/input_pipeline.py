"""Input pipeline throughput against train-step throughput, in one run on one machine.

    python -m benchmarks.input_pipeline --raw-dir ../shared/datasets [--data-dir DIR] [--json out.json]

For MNIST and CIFAR-10: images/s of the tf.data source and of the device-resident source
(finished float32 batches on the device, block_until_ready), beside the images/s of a
``seed_cnn`` train step on the same input shape. The input side should be at least 10x
faster than the step it feeds; the ratio is printed for each source.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jaxres

jaxres.setup()  # before JAX starts: the CPU fast path and kept memory, as in a training run

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxres import config, data, models, train  # noqa: E402


def _throughput(batches, n: int, batch_size: int) -> float:
    it = iter(batches)
    jax.block_until_ready(next(it))  # warm-up: compilation, cache fill, first shuffle
    t = time.perf_counter()
    count = 0
    for _ in range(n):
        try:
            jax.block_until_ready(next(it))
        except StopIteration:
            break
        count += 1
    return count * batch_size / (time.perf_counter() - t)


def _step_throughput(shape, batch_size: int, steps: int) -> float:
    state = train.create_train_state(models.seed_cnn(), jax.random.key(0), shape)
    rng = np.random.default_rng(0)
    batch = {"image": jax.device_put(rng.random((batch_size, *shape), np.float32)),
             "label": jax.device_put(rng.integers(0, 10, batch_size).astype(np.int32))}
    step = train.jit_train_step()
    state, m = step(state, batch, jax.random.key(0))
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, m = step(state, batch, jax.random.key(i))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return batch_size / statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw-dir", help="folder with mnist/ and cifar10/ original files (default $JAXRES_RAW_DIR)")
    p.add_argument("--data-dir", help="tfds data dir (default: a temporary one, prepared here)")
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=200, help="batches timed per source")
    p.add_argument("--steps", type=int, default=10, help="train steps timed")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="jaxres-tfds-")
    results = []
    try:
        for name in args.datasets.split(","):
            row = {"dataset": name, "batch_size": args.batch_size}
            for source in ("tfds", "device"):
                ds = data.make_dataset(config.DataConfig(name=name, batch_size=args.batch_size, source=source),
                                       raw_dir=args.raw_dir, data_dir=data_dir)
                row[f"{source}_images_per_s"] = _throughput(ds.train_batches(0), args.batches, args.batch_size)
            row["train_step_images_per_s"] = _step_throughput(data.DATASETS[name].shape, args.batch_size, args.steps)
            for source in ("tfds", "device"):
                row[f"{source}_over_step"] = row[f"{source}_images_per_s"] / row["train_step_images_per_s"]
            results.append(row)
            print(f"{name}: tf.data {row['tfds_images_per_s']:,.0f} img/s ({row['tfds_over_step']:.0f}x the step), "
                  f"device-resident {row['device_images_per_s']:,.0f} img/s ({row['device_over_step']:.0f}x), "
                  f"seed_cnn train step {row['train_step_images_per_s']:,.0f} img/s "
                  f"[{'ok' if min(row['tfds_over_step'], row['device_over_step']) >= 10 else 'BELOW 10x'}]")
    except (data.DataError, config.ConfigError) as e:
        print(f"input_pipeline: error: {e}", file=sys.stderr)
        return 2
    env = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.local_device_count()}
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "environment": env}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
