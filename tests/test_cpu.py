"""The CPU settings that `jaxres.setup()` applies: flag set safely, user settings kept, same gradients, memory kept."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxres import cpu

ROOT = Path(__file__).resolve().parents[1]

GRADS = """
import sys, jaxres
jaxres.setup()
import numpy as np, jax, jax.numpy as jnp, optax
from jaxres import cpu, models
print(cpu.fast_path_status())
model = models.seed_cnn()
x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1)); y = jnp.arange(16) % 10
params = model.init(jax.random.key(0), x)["params"]
loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
g = jax.jit(jax.grad(loss))(params)
np.savez(sys.argv[1], *[np.asarray(l) for l in jax.tree_util.tree_leaves(g)])
"""


def python(code, *args, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu.SWITCH)}
    env.update(env_changes, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_setup_applies_the_flag_and_jax_works():
    out = python("import os, jaxres\njaxres.setup()\nimport jax.numpy as jnp\nprint(os.environ['XLA_FLAGS']); "
                 "print(float(jnp.ones(4).sum()))")
    assert cpu.FLAG in out and "4.0" in out


def test_switch_turns_it_off_and_user_setting_is_kept():
    code = "import os, jaxres\njaxres.setup()\nimport jax.numpy as jnp\nfrom jaxres import cpu\nprint(cpu.fast_path_status(), os.environ.get('XLA_FLAGS'), float(jnp.ones(2).sum()))"
    assert "off" in python(code, **{cpu.SWITCH: "0"}) and cpu.FLAG not in python(code, **{cpu.SWITCH: "0"})
    mine = "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=2"
    out = python(code, XLA_FLAGS=mine)
    assert "kept the user's" in out and mine in out and cpu.FLAG not in out


def test_an_unknown_version_is_probed_and_a_jaxlib_without_the_flag_is_left_alone(monkeypatch):
    monkeypatch.setattr(cpu, "VERIFIED_JAXLIB", ())
    assert cpu._jaxlib_knows_flag()  # found in jaxlib's library by name
    monkeypatch.setattr(cpu, "FLAG_NAME", "xla_cpu_flag_that_does_not_exist_anywhere")
    monkeypatch.setattr(cpu, "FLAG", "--xla_cpu_flag_that_does_not_exist_anywhere=1")
    monkeypatch.delenv(cpu.SWITCH, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert cpu.apply_cpu_fast_path().startswith("not applied")
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def test_gradients_on_the_fast_path_match_the_default_path(tmp_path):
    """Tolerance: the two paths sum in different orders in float32; gradients agree to
    atol 1e-4 x max|g| and rtol 1e-3."""
    fast, default = tmp_path / "fast.npz", tmp_path / "default.npz"
    assert "applied" in python(GRADS, str(fast))
    assert "off" in python(GRADS, str(default), **{cpu.SWITCH: "0"})
    with np.load(fast) as f, np.load(default) as d:
        a, b = [f[k] for k in sorted(f.files)], [d[k] for k in sorted(d.files)]
    scale = max(float(np.abs(x).max()) for x in b)
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    print(f"max |grad| {scale:.3g}, max abs difference {diff:.3g}")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4 * scale)


FAULTS = """
import os, jaxres
jaxres.setup()
import jax, jax.numpy as jnp
from jaxres import cpu
x = jnp.ones((4096, 4096))  # 64 MB
f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x, axis=0) * 2))  # the cumulative sums: a 64 MB temporary
faults = lambda: int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[7])
for _ in range(10):  # until the heap has grown to hold it whatever else was allocated around it
    f(x).block_until_ready()
before = faults()
for _ in range(20):
    f(x).block_until_ready()
print(cpu.memory_status()); print((faults() - before) / 20)
"""


@pytest.mark.slow
def test_freed_memory_is_reused_instead_of_faulted_in_every_step():
    """A compiled function with a 64 MB temporary (above glibc's largest mmap threshold, as XLA's
    per-step buffer of a train step is): by default every call maps it afresh and page-faults through
    all of it (49,155 faults a call here); with the memory kept (jaxres.cpu.keep_freed_memory) most
    calls reuse it and fault nothing (observed: 0 to 6,554 a call on average over 20, when glibc has
    placed another allocation inside the freed block and must grow the heap once more; a seed_cnn
    train step faulted 0 times in 50 steps). Asserted: under a quarter of the default's faults."""
    kept = python(FAULTS).split()
    default = python(FAULTS, JAXRES_KEEP_MEMORY="0").split()
    assert kept[0] == "applied" and default[0] == "off", (kept, default)
    assert float(default[-1]) > 16_000 and float(kept[-1]) < float(default[-1]) / 4, (kept, default)
    assert default[:2] == ["off", "(compute.keep_memory=false)"]
    assert python(FAULTS, **{cpu.SWITCH: "0"}).startswith("applied")  # the fast path's switch leaves it alone
