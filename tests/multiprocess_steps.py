"""A few Adam steps on a fixed global batch, on whatever devices and processes this is started with;
process 0 writes the parameters, batch statistics and losses to an .npz (tests/test_distributed.py).

    python tests/multiprocess_steps.py OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]

Set XLA_FLAGS=--xla_force_host_platform_device_count=N for N devices per process.
"""
import sys

import numpy as np

import jaxres
from jaxres import distributed

jaxres.setup()
if len(sys.argv) > 2:
    distributed.initialize(distributed.setup_from(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), init_timeout=60,
                                                  heartbeat_timeout=30))

import jax  # noqa: E402
import optax  # noqa: E402

from jaxres import data, metrics, models, train  # noqa: E402

CIFAR, GLOBAL_BATCH, STEPS = (32, 32, 3), 16, 3
out = {}
for norm in ("none", "batch"):
    model = (models.get_model("seed_cnn") if norm == "none"
             else models.ResNet(stage_sizes=(1, 1), widths=(16, 32), norm="batch", kernel_init="he_normal"))
    state = train.create_train_state(model, jax.random.key(0), CIFAR, optax.adam(1e-3))
    rng = np.random.default_rng(0)
    batches = [{"image": rng.random((GLOBAL_BATCH, *CIFAR), np.float32),
                "label": rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32)} for _ in range(STEPS)]
    if jax.device_count() == 1:
        step = train.jit_train_step(donate=False)
        put = lambda b: b  # noqa: E731
    else:
        mesh = train.make_mesh()
        state, step = train.place(state, mesh), train.sharded_train_step(mesh, donate=False)
        share = data.process_slice(GLOBAL_BATCH, jax.process_index(), jax.process_count())
        put = lambda b: {k: jax.make_array_from_process_local_data(train.batch_sharding(mesh), v[share])  # noqa: E731
                         for k, v in b.items()}
    losses = []
    for i, b in enumerate(batches):
        state, m = step(state, put(b), jax.random.key(i))
        losses.append(metrics.summarize(m)["loss"])
    out[f"{norm}/losses"] = np.array(losses)
    for prefix, tree in (("params", state.params), ("batch_stats", state.batch_stats)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            out[f"{norm}/{prefix}{jax.tree_util.keystr(path)}"] = metrics.host_value(leaf)
if jax.process_index() == 0:
    np.savez(sys.argv[1], devices=jax.device_count(), processes=jax.process_count(), **out)
print("done", jax.process_index(), jax.device_count())
