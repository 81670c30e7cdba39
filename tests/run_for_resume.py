"""Helper run for tests/test_checkpoint.py: a tiny MNIST training with per-epoch checkpoints.

usage: python tests/run_for_resume.py RUN_DIR RAW_DIR EPOCHS N_DEVICES [KILL_AT_EPOCH KILL_AT_STEP]
Writes RUN_DIR/final.npz (parameters) and RUN_DIR/history.json. With KILL_AT_*, the process
SIGKILLs itself at that (0-based) epoch and step, after the previous epoch's checkpoint is on disk.
"""
import json
import os
import signal
import sys

import jax
import numpy as np

from jaxres import checkpoint, data, models, train

run_dir, raw_dir, epochs, n_dev = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kill = tuple(map(int, sys.argv[5:7])) if len(sys.argv) > 6 else None
ds = data.Dataset(data.DataConfig(name="mnist", batch_size=32, eval_batch_size=64, train_subset=192,
                                  test_subset=100), raw_dir=raw_dir, n_devices=n_dev)
model = models.get_model("seed_resnet", norm="batch")
state = train.create_train_state(model, jax.random.key(0), ds.shape)
ckpt = checkpoint.Checkpointer(run_dir, {"model": "seed_resnet", "norm": "batch", "data": "mnist-192"})

if kill:
    batches = ds.train_batches

    def killing_batches(epoch, start_step=0):
        for step, batch in enumerate(batches(epoch, start_step), start_step):
            if (epoch, step) == kill:
                ckpt.wait()
                print("killing myself", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

    ds.train_batches = killing_batches

state, history = train.fit(state, ds, epochs, jax.random.key(0), checkpointer=ckpt, progress=False)
ckpt.close()
leaves = jax.tree_util.tree_leaves({"params": state.params, "batch_stats": state.batch_stats, "opt": state.opt_state})
np.savez(os.path.join(run_dir, "final.npz"), *[np.asarray(x) for x in leaves])
with open(os.path.join(run_dir, "history.json"), "w") as f:
    json.dump([{k: v for k, v in h.items() if k != "epoch_time_s"} for h in history], f)
print("done", len(history), flush=True)
