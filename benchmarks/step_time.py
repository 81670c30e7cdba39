"""Train-step time of jaxres against PyTorch and Keras 3/TensorFlow on the same networks, side by side.

    python -m benchmarks.step_time [--dtype float32,bfloat16] [--batch 128] [--steps 20] [--rounds 5] [--json out.json]

Each framework runs in its own worker process (XLA flags are per process, so "jaxres with
default XLA flags" and "jaxres as shipped" need separate ones). Every worker builds the same
architecture (parameter counts are checked equal), compiles / warms up, then the controller
asks the workers in turn for rounds of timed steps, so all frameworks share the same minutes
of a noisy machine. Reported: compile time; median, p10 and p90 of per-step time over all
rounds; images/s; FLOP per step from XLA's cost analysis of the jaxres step; achieved GFLOP/s
as a fraction of an f32 GEMM peak measured in the same run; and jaxres's step time over the
faster peer's. Peers missing from the environment (`pip install -e .[bench]`) are skipped with
a note, never faked.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = [  # (model, input shape HWC, norm)
    ("seed_cnn", (28, 28, 1), "none"),
    ("seed_cnn", (32, 32, 3), "none"),
    ("seed_resnet", (28, 28, 1), "none"),
    ("seed_resnet", (32, 32, 3), "none"),
    ("resnet20", (32, 32, 3), "batch"),
    ("resnet56", (32, 32, 3), "batch"),
]
WORKERS = ("jaxres-default-flags", "jaxres-xla", "jaxres", "pytorch", "keras-tf")
# jaxres: as shipped (on CPU, convolutions through oneDNN); jaxres-xla: XLA's convolutions with
# jaxres's swapped kernel-gradient rule (the CPU path where oneDNN is unavailable); default flags:
# XLA's convolutions through YNNPACK, without jaxres's CPU fast path.
CONV_BACKENDS = {"jaxres-xla": "xla-swapped", "jaxres-xla-kernel-grad": "xla", "jaxres-winograd": "winograd"}
# Options tried on top of jaxres as shipped (--frameworks jaxres,jaxres-no-donate,...), README "Benchmarks":
JAX_VARIANTS = {
    "jaxres-xla-kernel-grad": "XLA's convolutions, its own kernel-gradient rule (JAXRES_CONV=xla)",
    "jaxres-onednn-current": "jaxres built against the current oneDNN (3.13, SYCL/TBB) instead of 3.2, run by the "
                             "environment make onednn-current made (.venv-onednn-current)",
    "jaxres-winograd": "Winograd F(4x4,3x3) in XLA for the stride-1 3x3 convolutions with >= 16 input channels, "
                       "oneDNN for the others (JAXRES_CONV=winograd)",
    "jaxres-no-donate": "the old train state's buffers are not donated to the new one",
    "jaxres-scan4": "4 steps per dispatch with lax.scan, unrolled (same batch)",
    "jaxres-scan2-rolled": "2 steps per dispatch with lax.scan as a while loop (same batch)",
    "jaxres-2-devices": "pmap over 2 host devices (--xla_force_host_platform_device_count=2), batch split",
    "jaxres-sharded-2-devices": "sharded jit (one program over a 2-device mesh, shard_map) on 2 host devices",
    "jaxres-pmap-1-device": "pmap over 1 device (the data-parallel machinery, nothing to split)",
    "jaxres-sharded-1-device": "sharded jit over a 1-device mesh (the data-parallel machinery, nothing to split)",
    "jaxres-unfused-add": "a residual block's shortcut addition and ReLU in XLA after the oneDNN convolution "
                          "(JAXRES_CONV_FUSE_ADD=0) instead of as its post-ops",
    "jaxres-sequential-grads": "each convolution's input and kernel gradients one after the other on both OpenMP "
                               "threads (JAXRES_CONV_OVERLAP_GRADS=0) instead of at the same time on one each",
    "jaxres-omp1": "oneDNN with one OpenMP thread (OMP_NUM_THREADS=1) instead of one per core",
    "jaxres-layer-norms-every1": "per-layer gradient/parameter/update norms recorded at every step",
    "jaxres-layer-norms-every10": "per-layer norms at every 10th step (the default of experiments.compare)",
    "jaxres-xla-norm": "batch normalization in XLA around the oneDNN convolutions (JAXRES_ONEDNN_NORM=0) "
                       "instead of oneDNN's batch-norm primitives fused with ReLU / the shortcut add",
    "jaxres-unkept-memory": "glibc's default malloc settings (JAXRES_KEEP_MEMORY=0, jaxres.cpu): every step "
                            "maps and faults in fresh memory for XLA's temporary buffer",
}
# The peers with jaxres's malloc settings, by glibc's environment variable (is the gain jaxres's own?):
KEPT_MEMORY = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"
PEER_VARIANTS = {"pytorch-kept-memory": "PyTorch with GLIBC_TUNABLES=" + KEPT_MEMORY,
                 "keras-tf-kept-memory": "Keras with GLIBC_TUNABLES=" + KEPT_MEMORY}
VARIANTS = {**JAX_VARIANTS, **PEER_VARIANTS}
ROOT = Path(__file__).resolve().parents[1]
CURRENT_ONEDNN_PYTHON = ROOT / ".venv-onednn-current" / "bin" / "python"  # make onednn-current


# =========================================================================== workers
def _dtype() -> str:
    return os.environ.get("JAXRES_BENCH_DTYPE", "float32")


def _jax_worker(case, batch, variant=""):
    """jaxres's train step; ``variant`` is one of the options in JAX_VARIANTS (timed per step)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxres import data, models, train

    name, shape, norm = case
    model = models.get_model(name, norm=norm, dtype=jnp.dtype(_dtype()))  # params stay float32
    state = train.create_train_state(model, jax.random.key(0), shape)
    params = models.count_params(state.params)
    rng = np.random.default_rng(0)
    b = {"image": rng.random((batch, *shape), np.float32), "label": rng.integers(0, 10, batch).astype(np.int32)}
    key = jax.random.key(0)
    per_call = 1
    if variant in ("2-devices", "pmap-1-device"):
        n = jax.local_device_count()
        state, b, step = train.replicate(state), data.shard(b, n), train.pmap_train_step()
        t = time.perf_counter()
        state, m = step(state, b, key)  # pmap compiles on its first call: timed with that call
        jax.block_until_ready(m)
        compile_s, flops = time.perf_counter() - t, 0.0
        compiled = step
    elif variant.startswith("sharded"):
        mesh = train.make_mesh(jax.local_devices())
        state, b, step = train.place(state, mesh), jax.device_put(b, train.batch_sharding(mesh)), \
            train.sharded_train_step(mesh)
        t = time.perf_counter()
        compiled = step.lower(state, b, key).compile()
        compile_s, flops = time.perf_counter() - t, 0.0
    else:
        b = jax.device_put(b)
        if variant.startswith("scan"):
            per_call, unroll = int(variant[4:].split("-")[0]), not variant.endswith("rolled")

            def many(state, batch, rng):
                return jax.lax.scan(lambda s, _: train.train_step(s, batch, rng), state, None,
                                    length=per_call, unroll=unroll)
            step = jax.jit(many, donate_argnums=(0,))
        else:
            every = int(variant.rsplit("every", 1)[1]) if variant.startswith("layer-norms-every") else 0
            step = train.jit_train_step(donate=variant != "no-donate", layer_norms_every=every)
        flops = _xla_flops(step, state, b, key) / per_call
        t = time.perf_counter()
        compiled = step.lower(state, b, key).compile()
        compile_s = time.perf_counter() - t
    holder = {"state": state}

    def run(n):
        s = holder["state"]
        times = []
        for _ in range(max(1, n // per_call)):
            t0 = time.perf_counter()
            s, m = compiled(s, b, key)
            jax.block_until_ready(m)
            times += [(time.perf_counter() - t0) / per_call] * per_call
        holder["state"] = s
        return times

    for _ in range(2):
        run(1)
    from jaxres import conv

    return {"params": params, "compile_s": compile_s, "flops": flops, "backend": conv.describe(_dtype())}, run


def _xla_flops(step, state, batch, key) -> float:
    """FLOP per call from XLA's cost analysis of the step compiled with XLA's own convolutions: XLA
    cannot count what a oneDNN custom call computes, so every jaxres worker counts the same way."""
    from jaxres import conv

    with conv.forced("xla"):  # then the automatic choice again (JAXRES_CONV for the variant workers)
        cost = step.lower(state, batch, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _torch_worker(case, batch):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    name, (h, w, c), norm = case

    def conv(cin, cout, stride=1, bias=True):
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)

    class Block(nn.Module):
        def __init__(self, cin, inner, out, stride, bn):
            super().__init__()
            self.c0, self.c1 = conv(cin, inner, stride, not bn), conv(inner, out, 1, not bn)
            self.n0 = nn.BatchNorm2d(inner, momentum=0.1) if bn else nn.Identity()
            self.n1 = nn.BatchNorm2d(out, momentum=0.1) if bn else nn.Identity()
            self.stride, self.pad = stride, out - cin

        def forward(self, x):
            r = self.n1(self.c1(torch.relu(self.n0(self.c0(x)))))
            s = x[:, :, ::self.stride, ::self.stride]
            if self.pad:
                s = nn.functional.pad(s, (0, 0, 0, 0, 0, self.pad))
            return torch.relu(r + s)

    if name == "seed_cnn":
        layers, cin = [], c
        for width in (64, 32, 64, 32, 64):
            layers += [conv(cin, width), nn.ReLU()]
            cin = width
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(h * w * 64, 10))
    elif name == "seed_resnet":
        net = nn.Sequential(conv(c, 32), nn.ReLU(), *[Block(32, 64, 32, 1, False) for _ in range(5)],
                            nn.Flatten(), nn.Linear(h * w * 32, 10))
    else:  # resnet20 with batch norm
        blocks, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(3):
                blocks.append(Block(cin, width, width, 2 if i > 0 and j == 0 else 1, True))
                cin = width
        net = nn.Sequential(conv(c, 16, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *blocks,
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, c, h, w, generator=g).to(device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    loss_fn = nn.CrossEntropyLoss()
    bf16 = _dtype() == "bfloat16"  # float32 parameters, bf16 compute: autocast, as jaxres's dtype knob

    def run(n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            loss.item()
            times.append(time.perf_counter() - t0)
        return times

    t = time.perf_counter()
    run(2)
    return {"params": sum(p.numel() for p in net.parameters()), "compile_s": time.perf_counter() - t,
            "flops": 0.0}, run


def _keras_worker(case, batch):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(0)
    # bfloat16 compute with float32 variables and a float32 loss, as jaxres's precision=bfloat16:
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if _dtype() == "bfloat16" else "float32")
    name, shape, norm = case
    L = keras.layers

    def block(x, inner, out, stride, bn):
        r = L.Conv2D(inner, 3, strides=stride, padding="same", use_bias=not bn)(x)
        r = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(r) if bn else r
        r = L.Conv2D(out, 3, padding="same", use_bias=not bn)(L.ReLU()(r))
        r = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(r) if bn else r
        s = x
        if stride > 1 or x.shape[-1] != out:
            s = L.Lambda(lambda t: tf.pad(t[:, ::stride, ::stride, :],
                                          [[0, 0], [0, 0], [0, 0], [0, out - t.shape[-1]]]))(x)
        return L.ReLU()(L.Add()([r, s]))

    inp = keras.Input(shape)
    if name == "seed_cnn":
        x = inp
        for width in (64, 32, 64, 32, 64):
            x = L.Conv2D(width, 3, padding="same", activation="relu")(x)
        out = L.Dense(10)(L.Flatten()(x))
    elif name == "seed_resnet":
        x = L.Conv2D(32, 3, padding="same", activation="relu")(inp)
        for _ in range(5):
            x = block(x, 64, 32, 1, False)
        out = L.Dense(10)(L.Flatten()(x))
    else:
        x = L.ReLU()(L.BatchNormalization(momentum=0.9, epsilon=1e-5)(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
        for i, width in enumerate((16, 32, 64)):
            for j in range(3):
                x = block(x, width, width, 2 if i > 0 and j == 0 else 1, True)
        out = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, L.Activation("linear", dtype="float32")(out))  # logits to float32 for the loss
    model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)

    def run(n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
        return times

    t = time.perf_counter()
    run(2)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)  # BN moving stats are not params
    return {"params": trainable, "compile_s": time.perf_counter() - t, "flops": 0.0}, run


def _gemm_peak(kind: str, reps: int = 10) -> float:
    """Best GEMM GFLOP/s of this worker's framework in the benchmark's dtype (n x n, n = 2048 on CPU, 8192 on GPU)."""
    if kind == "pytorch":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        n = 8192 if dev == "cuda" else 2048
        a = torch.rand(n, n, device=dev, dtype=getattr(torch, _dtype()))
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        mm = lambda: (torch.mm(a, a), sync())
    else:
        import jax
        import jax.numpy as jnp

        n = 2048 if jax.default_backend() == "cpu" else 8192
        a = jax.random.uniform(jax.random.key(0), (n, n)).astype(_dtype())
        f = jax.jit(jnp.dot)
        f(a, a).block_until_ready()
        mm = lambda: f(a, a).block_until_ready()
    mm()
    best = min(_timed(mm) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker_main(kind: str, batch: int) -> None:
    """Line protocol on stdin/stdout: 'setup i' -> info JSON, 'run n' -> times JSON, 'peak' -> GFLOP/s."""
    if kind.startswith("jaxres"):
        import jaxres

        jaxres.setup()  # the CPU fast path and kept memory first (JAXRES_CPU_FAST_PATH=0 etc. skip them)

    builders = {"jaxres": _jax_worker, "jaxres-default-flags": _jax_worker, "jaxres-xla": _jax_worker,
                "pytorch": _torch_worker, "keras-tf": _keras_worker}
    builders.update({k: functools.partial(_jax_worker, variant=k[len("jaxres-"):]) for k in JAX_VARIANTS})
    builders.update({k: builders[k.removesuffix("-kept-memory")] for k in PEER_VARIANTS})
    run = None
    for line in sys.stdin:
        cmd, arg = (line.split() + [""])[:2]
        if cmd == "setup":
            info, run = builders[kind](CASES[int(arg)], batch)
            reply = info
        elif cmd == "run":
            reply = run(int(arg))
        elif cmd == "peak":
            reply = _gemm_peak(kind)
        else:
            return
        print(json.dumps(reply), flush=True)


# =========================================================================== controller
def _available(kind: str) -> str | None:
    """None when the worker can run here, else why not."""
    import importlib.util

    if kind == "jaxres-onednn-current" and not CURRENT_ONEDNN_PYTHON.is_file():
        return f"{CURRENT_ONEDNN_PYTHON} does not exist (make onednn-current)"
    kind = kind.removesuffix("-kept-memory")
    need = {"pytorch": "torch", "keras-tf": "tensorflow"}.get(kind)
    if need and importlib.util.find_spec(need) is None:
        return f"{need} is not installed (pip install -e '.[bench]')"
    if kind == "keras-tf" and importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    return None


class Worker:
    def __init__(self, kind: str, batch: int, dtype: str = "float32", cpus: str | None = None):
        """``cpus``: pin the worker to these CPUs (``taskset -c``), as a campaign job with one core would be."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", JAXRES_BENCH_DTYPE=dtype)
        if kind == "jaxres-default-flags":
            env["JAXRES_CPU_FAST_PATH"] = "0"
        if kind in CONV_BACKENDS:
            env["JAXRES_CONV"] = CONV_BACKENDS[kind]
        if kind == "jaxres-omp1":
            env["OMP_NUM_THREADS"] = "1"
        if kind == "jaxres-unfused-add":
            env["JAXRES_CONV_FUSE_ADD"] = "0"
        if kind == "jaxres-sequential-grads":
            env["JAXRES_CONV_OVERLAP_GRADS"] = "0"
        if kind == "jaxres-xla-norm":
            env["JAXRES_ONEDNN_NORM"] = "0"
        if kind == "jaxres-unkept-memory":
            env["JAXRES_KEEP_MEMORY"] = "0"
        if kind in PEER_VARIANTS:
            env["GLIBC_TUNABLES"] = KEPT_MEMORY
        if kind in ("jaxres-2-devices", "jaxres-sharded-2-devices"):
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        self.kind = kind
        python = str(CURRENT_ONEDNN_PYTHON) if kind == "jaxres-onednn-current" else sys.executable
        pin = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen([*pin, python, "-m", "benchmarks.step_time", "--worker", kind,
                                      "--batch", str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)

    def ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"{self.kind} worker died answering {line!r}")
        return json.loads(reply)

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


PEERS = ("pytorch", "keras-tf")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtype", default="float32",
                   help="compute dtype(s), comma-separated from float32, bfloat16; several run side by side in "
                        "the same rounds (parameters stay float32; PyTorch uses autocast, Keras mixed_bfloat16)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework and case (>= 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the steps are split into")
    p.add_argument("--cases", default="0,1,2,3,4",  # resnet56 (5) on request: 3x resnet20's step
                   help="indices into: " + "; ".join(f"{i}={m} {'x'.join(map(str, s))} norm={n}"
                                                      for i, (m, s, n) in enumerate(CASES)))
    p.add_argument("--frameworks", default=",".join(WORKERS),
                   help="comma-separated, from: " + ", ".join(WORKERS + tuple(VARIANTS)))
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.batch)
        return 0
    kinds = [k for k in args.frameworks.split(",") if k]
    unknown = [k for k in kinds if k not in WORKERS and k not in VARIANTS]
    if unknown:
        p.error(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(WORKERS + tuple(VARIANTS))}")
    dtypes = list(dict.fromkeys(d for d in args.dtype.split(",") if d))
    if not dtypes or set(dtypes) - {"float32", "bfloat16"}:
        p.error(f"--dtype {args.dtype!r}: choose float32, bfloat16 or float32,bfloat16")
    for k in kinds:
        if k in VARIANTS:
            print(f"{k}: {VARIANTS[k]}")
    notes = {k: why for k in kinds if (why := _available(k))}
    for k, why in notes.items():
        print(f"skipping {k}: {why}")
    kinds = [k for k in kinds if k not in notes]
    label = (lambda k, d: k) if len(dtypes) == 1 else (lambda k, d: f"{k} {d}")
    per_round = max(1, -(-args.steps // args.rounds))
    from jaxres import cpu

    host = cpu.host()
    print(f"CPU: {cpu.name(host)}, {host['cpus']} logical CPUs, {', '.join(host['isa']) or 'no AVX2'}")
    results = {"batch": args.batch, "dtypes": dtypes, "cpu_count": os.cpu_count(), "cpu": host, "skipped": notes,
               "command": "python -m benchmarks.step_time " + " ".join(sys.argv[1:] if argv is None else argv),
               "gemm_peak_gflops": {}, "cases": []}
    workers = {}
    try:
        for d in dtypes:
            for k in kinds:
                workers[(k, d)] = Worker(k, args.batch, d)
        peak = {}
        for d in dtypes:
            by = {k: workers[(k, d)].ask("peak") for k in kinds if k in ("jaxres", "pytorch")}
            peak[d] = max(by.values()) if by else 0.0
            results["gemm_peak_gflops"][d] = {"value": peak[d], "by": by,
                                              "what": f"best {d} matmul, 2048^2 on CPU, 8192^2 on GPU"}
            print(f"{d} GEMM peak: {peak[d]:.1f} GFLOP/s ({', '.join(f'{k} {v:.1f}' for k, v in by.items())})")
        for idx in (int(i) for i in args.cases.split(",")):
            name, shape, norm = CASES[idx]
            info = {kd: w.ask(f"setup {idx}") for kd, w in workers.items()}
            if "backends" not in results:  # what each jaxres worker's convolutions ran on (its oneDNN's version)
                results["backends"] = {label(*kd): v["backend"] for kd, v in info.items() if "backend" in v}
                for k, v in results["backends"].items():
                    print(f"{k}: {v}")
            counts = {label(*kd): v["params"] for kd, v in info.items()}
            if len(set(counts.values())) != 1:
                raise SystemExit(f"parameter counts differ for {name}: {counts}")
            times = {kd: [] for kd in workers}
            for _ in range(args.rounds):
                for kd, w in workers.items():
                    times[kd] += w.ask(f"run {per_round}")
            flops = next((v["flops"] for v in info.values() if v["flops"]), 0.0)  # from a jaxres worker
            rows = {}
            for (k, d), ts in times.items():
                med = statistics.median(ts)
                rows[label(k, d)] = {
                    "framework": k, "dtype": d, "compile_s": info[(k, d)]["compile_s"], "median_s": med,
                    "p10_s": _pct(ts, 0.1), "p90_s": _pct(ts, 0.9), "steps": len(ts), "images_per_s": args.batch / med,
                    "gflops": flops / med / 1e9 if flops else None,
                    "fraction_of_peak": flops / med / 1e9 / peak[d] if flops and peak[d] else None}
            med = {(r["framework"], r["dtype"]): r["median_s"] for r in rows.values()}
            over_peer = {}
            for d in dtypes:
                peers = [med[(k, d)] for k in PEERS if (k, d) in med]
                if peers and ("jaxres", d) in med:
                    over_peer[d] = med[("jaxres", d)] / min(peers)
            bf_over_f32 = {k: med[(k, "bfloat16")] / med[(k, "float32")] for k in kinds
                           if (k, "bfloat16") in med and (k, "float32") in med}
            case = {"model": name, "input": list(shape), "norm": norm, "params": counts.popitem()[1],
                    "flop_per_step": flops, "flop_source": "XLA cost analysis of the jaxres train step compiled "
                                                           "with XLA's convolutions",
                    "frameworks": rows, "jaxres_over_fastest_peer": over_peer, "bfloat16_over_float32": bf_over_f32}
            results["cases"].append(case)
            print(f"\n{name} {'x'.join(map(str, shape))} norm={norm}, batch {args.batch}, {case['params']:,} params, "
                  f"{flops / 1e9:.1f} GFLOP/step (XLA cost analysis)")
            print(f"  {'framework':31} {'compile s':>9} {'median s':>9} {'p10 s':>7} {'p90 s':>7} {'img/s':>8} "
                  f"{'GFLOP/s':>8} {'of peak':>8}")
            for lab, r in rows.items():
                gf = f"{r['gflops']:.1f}" if r["gflops"] else "-"
                fr = f"{r['fraction_of_peak']:.0%}" if r["fraction_of_peak"] else "-"
                print(f"  {lab:31} {r['compile_s']:9.2f} {r['median_s']:9.3f} {r['p10_s']:7.3f} {r['p90_s']:7.3f} "
                      f"{r['images_per_s']:8.0f} {gf:>8} {fr:>8}")
            for d, ratio in over_peer.items():
                print(f"  jaxres / fastest peer, {d}: {ratio:.2f}x")
            if bf_over_f32:
                print("  bfloat16 / float32: " + ", ".join(f"{k} {v:.2f}" for k, v in bf_over_f32.items()))
    finally:
        for w in workers.values():
            w.close()
    if results["cases"]:
        _summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def _summary(results) -> None:
    """One markdown table over the cases: median s per framework and dtype, and the ratios."""
    labels = list(results["cases"][0]["frameworks"])
    dtypes = results["dtypes"]
    head = ["case"] + labels + [f"jaxres / peer {d}" for d in dtypes]
    head += [f"jaxres {d} of peak" for d in dtypes]
    if len(dtypes) == 2:
        head.append("jaxres bf16 / f32")
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for c in results["cases"]:
        cells = [f"{c['model']} {'x'.join(map(str, c['input']))}" + (f" {c['norm']} norm" if c["norm"] != "none" else "")]
        cells += [f"{c['frameworks'][lab]['median_s']:.3f}" for lab in labels]
        cells += [f"{c['jaxres_over_fastest_peer'][d]:.2f}x" if d in c["jaxres_over_fastest_peer"] else "-"
                  for d in dtypes]
        for d in dtypes:
            r = next((r for r in c["frameworks"].values() if r["framework"] == "jaxres" and r["dtype"] == d), None)
            cells.append(f"{r['fraction_of_peak']:.0%}" if r and r["fraction_of_peak"] else "-")
        if len(dtypes) == 2:
            v = c["bfloat16_over_float32"].get("jaxres")
            cells.append(f"{v:.2f}" if v else "-")
        print("| " + " | ".join(cells) + " |")
    host = results["cpu"]
    print(f"({results['command']}; {', '.join(v for v in (host['model'], host.get('family')) if v)}, {host['cpus']} CPUs, {'/'.join(host['isa'])}; GEMM peak " + ", ".join(
        f"{d} {results['gemm_peak_gflops'][d]['value']:.1f}" for d in dtypes) + " GFLOP/s)")


if __name__ == "__main__":
    sys.exit(main())
