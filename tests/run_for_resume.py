"""Helper run for tests/test_checkpoint.py: a tiny training with per-epoch checkpoints.

usage: python tests/run_for_resume.py RUN_DIR RAW_DIR EPOCHS N_DEVICES [KILL_AT_EPOCH KILL_AT_STEP]
$JAXRES_TEST_PRECISION (default float32) is the run's compute.precision; $JAXRES_TEST_EVERY_STEPS (default 0)
saves a checkpoint inside the epoch every N steps.
A small residual network with batch norm on the synthetic MNIST files, augmentation on (so the
augmentation stream is part of what must resume exactly). Writes RUN_DIR/final.npz (parameters,
batch stats, optimizer state) and RUN_DIR/history.json. With KILL_AT_*, the process SIGKILLs
itself at that (0-based) epoch and step, after the previous epoch's checkpoint is on disk.
"""
import json
import os
import signal
import sys

import jaxres

jaxres.setup()  # as a training script does, before JAX starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxres import checkpoint, config, data, models, optim, train  # noqa: E402

run_dir, raw_dir, epochs, n_dev = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kill = tuple(map(int, sys.argv[5:7])) if len(sys.argv) > 6 else None
cfg = config.RunConfig(data=config.DataConfig(batch_size=32, eval_batch_size=64, train_subset=128, test_subset=100,
                                              augment=True), epochs=epochs,
                       compute=config.ComputeConfig(precision=os.environ.get("JAXRES_TEST_PRECISION", "float32")))
streams = train.Streams.from_seed(cfg.seed)
ds = data.make_dataset(cfg.data, raw_dir=raw_dir, order_seed=streams.order_seed, n_devices=n_dev)
model = models.ResNet(stage_sizes=(2,), widths=(8,), stem_width=8, norm="batch", dtype=jax.numpy.dtype(cfg.compute.precision))
state = train.create_train_state(model, streams.init, ds.shape, optim.make_optimizer(cfg))

every = int(os.environ.get("JAXRES_TEST_EVERY_STEPS", "0"))  # checkpoints inside an epoch, every N steps
with checkpoint.Checkpointer(run_dir, config.identity(cfg), every_steps=every) as ckpt:
    if kill:
        batches = ds.train_batches

        def killing_batches(epoch, rng=None, start=0):
            for step, batch in enumerate(batches(epoch, rng, start), start):
                if (epoch, step) == kill:
                    ckpt.wait()
                    print("killing myself", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                yield batch

        ds.train_batches = killing_batches
    fit = train.fit(state, ds, epochs, streams, checkpointer=ckpt, progress=False)
leaves = jax.tree_util.tree_leaves({"params": fit.state.params, "batch_stats": fit.state.batch_stats,
                                    "opt": fit.state.opt_state})
np.savez(os.path.join(run_dir, "final.npz"), *[np.asarray(x) for x in leaves])
with open(os.path.join(run_dir, "history.json"), "w") as f:
    json.dump([{k: v for k, v in h.items() if k != "epoch_time_s"} for h in fit.history], f)
print("done", len(fit.history), flush=True)
