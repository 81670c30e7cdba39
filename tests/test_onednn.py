"""oneDNN convolutions through the XLA FFI (jaxres.onednn, backend "onednn" of jaxres.conv).

Tolerance: oneDNN and XLA sum the same products in other orders and blockings, so values and
gradients agree to float32 rounding: 1e-5 of each result's largest entry (observed: up to 8e-6 for
kernel gradients that sum 100,000 products, ~1e-7 for the rest). bfloat16: 2e-2.
"""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxres import conv, cpu, models, norms, onednn

ROOT = Path(__file__).resolve().parents[1]
DN = ("NHWC", "HWIO", "NHWC")
pytestmark = pytest.mark.skipif(not onednn.load()[0], reason=f"oneDNN unavailable: {onednn.load()[1]}")


@pytest.fixture(autouse=True)
def use_onednn(monkeypatch):
    monkeypatch.setenv(conv.ENV, "onednn")
    monkeypatch.setenv(conv.OVERLAP_ENV, "1")  # both gradients in one call (the default, auto, follows the CPU)


def close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(np.abs(b).max()) + 1e-30)


def through_onednn(fn, *args) -> bool:
    return "jaxres_onednn_conv_" in str(jax.make_jaxpr(fn)(*args))


CASES = [  # batch, height, width, channels in, out, kernel, stride, padding
    (1, 7, 7, 1, 16, (3, 3), 1, "SAME"),                # batch 1, odd size, one channel
    (2, 8, 8, 3, 16, (3, 3), 2, ((1, 1), (1, 1))),      # even size, stride 2, He et al.'s padding
    (3, 9, 6, 16, 32, (3, 3), 2, "VALID"),              # odd and even sides, stride 2, no padding
    (2, 6, 6, 32, 64, (3, 3), 1, ((0, 2), (1, 0))),     # asymmetric padding
    (2, 10, 10, 64, 32, (3, 3), 1, "SAME"),             # the seed networks' 64 -> 32
    (2, 7, 7, 16, 32, (1, 1), 2, "VALID"),              # option B's 1x1 projection
    (2, 8, 9, 3, 8, (5, 3), 1, "SAME"),                 # a non-square kernel
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[3]}to{c[4]}-s{c[6]}-{c[1]}x{c[2]}-n{c[0]}" for c in CASES])
def test_values_and_gradients_equal_lax(case):
    n, h, w_, cin, cout, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w_, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)), jnp.float32)

    def f(conv_fn):
        return lambda x, w: conv_fn(x, w, (stride, stride), padding, dimension_numbers=DN)

    ours, ref = f(conv.conv_general_dilated), f(lax.conv_general_dilated)
    assert through_onednn(ours, x, w)
    y, y_ref = jax.jit(ours)(x, w), ref(x, w)
    close(y, y_ref)
    r = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * r), (0, 1)))(x, w)
    grads_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * r), (0, 1))(x, w)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        close(g, g_ref)


@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias-relu"])
@pytest.mark.parametrize("case", [c for c in CASES if c[5] == (3, 3)], ids=lambda c: f"{c[3]}to{c[4]}-s{c[6]}")
def test_fused_bias_and_relu_equal_lax(case, relu):
    """conv_bias_act: bias (and ReLU) inside oneDNN's forward, the bias gradient inside its kernel-gradient
    pass; values and the gradients of x, w and b equal lax's convolution, + b, jax.nn.relu."""
    n, h, w_, cin, cout, kernel, stride, padding = case
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(n, h, w_, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
    ours = lambda x, w, b: conv.conv_bias_act(x, w, b, (stride, stride), padding, relu)
    act = jax.nn.relu if relu else (lambda v: v)
    ref = lambda x, w, b: act(lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN) + b)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: ours(*a).sum(), (0, 1, 2)))(x, w, b))
    assert "jaxres_onednn_conv_bias_forward" in jaxpr and "jaxres_onednn_conv_bias_backward" in jaxpr
    y_ref = ref(x, w, b)
    close(jax.jit(ours)(x, w, b), y_ref)
    r = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * r), (0, 1, 2)))(x, w, b)
    grads_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * r), (0, 1, 2))(x, w, b)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        close(g, g_ref)


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add-relu"])
@pytest.mark.parametrize("case", [c for c in CASES if c[5] == (3, 3)], ids=lambda c: f"{c[3]}to{c[4]}-s{c[6]}")
def test_fused_shortcut_add_equals_lax(case, relu):
    """conv_bias_add_act: a residual block's end, conv + bias + shortcut (+ ReLU) as oneDNN post-ops; values
    and the gradients of x, w, b and the shortcut equal lax's convolution, + b, + s, jax.nn.relu."""
    n, h, w_, cin, cout, kernel, stride, padding = case
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(n, h, w_, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
    lin = lambda x, w, b: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN) + b
    s = jnp.asarray(rng.normal(size=lin(x, w, b).shape) * 2, jnp.float32)  # about half of the sum below 0
    ours = lambda x, w, b, s: conv.conv_bias_add_act(x, w, b, s, (stride, stride), padding, relu)
    act = jax.nn.relu if relu else (lambda v: v)
    ref = lambda x, w, b, s: act(lin(x, w, b) + s)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: ours(*a).sum(), (0, 1, 2, 3)))(x, w, b, s))
    assert "jaxres_onednn_conv_bias_add_forward" in jaxpr and "jaxres_onednn_conv_bias_backward" in jaxpr
    y_ref = ref(x, w, b, s)
    close(jax.jit(ours)(x, w, b, s), y_ref)
    r = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * r), (0, 1, 2, 3)))(x, w, b, s)
    grads_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * r), (0, 1, 2, 3))(x, w, b, s)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        close(g, g_ref)
    bad = lambda x, w, b, s: conv.conv_bias_add_act(x, w, b, s[:1], (stride, stride), padding, relu)
    if n > 1:  # a tensor of another shape is not fused: lax's broadcasting decides, as for + s
        assert "bias_add_forward" not in str(jax.make_jaxpr(bad)(x, w, b, s))
        close(bad(x, w, b, s), ref(x, w, b, s[:1]))


def test_the_input_gradient_is_computed_only_where_it_is_needed(monkeypatch):
    """The rules learn (symbolic zeros) whether x is differentiated: a network's input image is not, so
    no input-gradient call is made for the first layer, in either backward mode."""
    x, w, b = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8)), jnp.arange(8.0)
    f = lambda x, w, b: conv.conv_bias_act(x, w, b, (1, 1), "SAME", relu=True).sum()
    for overlap, both in (("0", "input_grad"), ("1", "conv_bias_backward")):
        monkeypatch.setenv(conv.OVERLAP_ENV, overlap)
        weights_only = str(jax.make_jaxpr(jax.grad(f, (1, 2)))(x, w, b))
        assert "kernel_bias_grad" in weights_only and "input_grad" not in weights_only
        assert "backward" not in weights_only
        assert both in str(jax.make_jaxpr(jax.grad(f, (0, 1, 2)))(x, w, b))


@pytest.mark.parametrize("avx512", [True, False])
def test_overlap_grads_auto_follows_the_cpu(avx512, monkeypatch):
    """compute.overlap_grads=auto (the default): both gradients in one call with AVX-512, one after the other
    without it (the faster order measured on each CPU kind), and the run's backend note says which and why."""
    monkeypatch.setenv(conv.OVERLAP_ENV, "auto")
    monkeypatch.setattr(conv, "_avx512", lambda: avx512)
    x, w, b = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8)), jnp.arange(8.0)
    f = lambda x, w, b: conv.conv_bias_act(x, w, b, (1, 1), "SAME", relu=True).sum()
    jaxpr = str(jax.make_jaxpr(jax.grad(f, (0, 1, 2)))(x, w, b))
    assert ("conv_bias_backward" in jaxpr) == avx512 and ("input_grad" in jaxpr) == (not avx512)
    note = conv.describe()
    assert f"compute.overlap_grads=auto: {'' if avx512 else 'no '}AVX-512 here" in note
    if not onednn.grads_at_once() or not avx512:
        assert "one after the other" in note


@pytest.mark.parametrize("overlap", ["1", "0"], ids=["at-once", "one-after-the-other"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[3]}to{c[4]}-s{c[6]}-{c[5][0]}x{c[5][1]}" for c in CASES])
def test_both_gradient_modes_equal_lax(case, overlap, monkeypatch):
    """A convolution's input and kernel (and bias) gradients in one call, at the same time on one thread each
    (the default on two threads), or, with JAXRES_CONV_OVERLAP_GRADS=0, in two calls one after the other: the
    gradients of x, w (plain convolution) and x, w, b, s (a residual block's end with ReLU) equal lax's."""
    monkeypatch.setenv(conv.OVERLAP_ENV, overlap)
    n, h, w_, cin, cout, kernel, stride, padding = case
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(n, h, w_, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, cin, cout)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
    lin = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)
    s = jnp.asarray(rng.normal(size=lin(x, w).shape) * 2, jnp.float32)
    r = jnp.asarray(rng.normal(size=s.shape), jnp.float32)
    pairs = [(lambda x, w: conv.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN),
              lin, (x, w), "jaxres_onednn_conv_backward" if overlap == "1" else "jaxres_onednn_conv_kernel_grad"),
             (lambda x, w, b, s: conv.conv_bias_add_act(x, w, b, s, (stride, stride), padding, relu=True),
              lambda x, w, b, s: jax.nn.relu(lin(x, w) + b + s), (x, w, b, s),
              "jaxres_onednn_conv_bias_backward" if overlap == "1" else "jaxres_onednn_conv_kernel_bias_grad")]
    for ours, ref, args, handler in pairs:
        argnums = tuple(range(len(args)))
        assert handler in str(jax.make_jaxpr(jax.grad(lambda *a: ours(*a).sum(), argnums))(*args))
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * r), argnums))(*args)
        grads_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * r), argnums)(*args)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            close(g, g_ref)


OVERLAP_THREADS = """
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from jaxres import conv
assert conv.backend() == "onednn"
print(conv.describe())
rng = np.random.default_rng(0)
x, w = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((4, 12, 12, 32), (3, 3, 32, 64)))
f = lambda c: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(c(x, w, (1, 1), "SAME", dimension_numbers=("NHWC",
    "HWIO", "NHWC")))), (0, 1)))
assert "conv_backward" in str(jax.make_jaxpr(f(conv.conv_general_dilated))(x, w))
for g, r in zip(f(conv.conv_general_dilated)(x, w), f(lax.conv_general_dilated)(x, w)):
    print(float(jnp.abs(g - r).max() / jnp.abs(r).max()))
"""


@pytest.mark.parametrize("threads", ["1", "2", pytest.param("3", marks=pytest.mark.slow)])
def test_both_gradients_at_once_on_any_number_of_threads(threads):
    """Two OpenMP threads: the two gradients at once, one thread each; one or three: one after the other."""
    env = dict(os.environ, OMP_NUM_THREADS=threads, **{conv.ENV: "onednn", conv.OVERLAP_ENV: "1"})
    out = subprocess.run([sys.executable, "-c", OVERLAP_THREADS], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    note, *lines = out.stdout.splitlines()
    errors = [float(v) for v in lines]
    assert len(errors) == 2 and max(errors) < 1e-5, errors
    assert f"{threads} OpenMP threads" in note  # the run header and results.json say how gradients ran
    assert note.endswith("at once, one thread each)" if threads == "2" else "one after the other)"), note
    env[conv.OVERLAP_ENV] = "0"
    out = subprocess.run([sys.executable, "-c", "from jaxres import conv; print(conv.describe())"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.stdout.strip().endswith("one after the other)"), out.stdout + out.stderr[-2000:]


def test_run_header_says_where_bfloat16_convolutions_fall_back_to_xla():
    """Without AVX512_BF16 oneDNN has no bfloat16 convolutions: a bfloat16 run's header says that XLA's run
    (slower than float32 there); with it, nothing is added. float32 is always oneDNN's."""
    fallback = "bfloat16 convolutions in XLA: this CPU has no oneDNN bfloat16"
    assert fallback not in conv.describe("float32")
    assert (fallback in conv.describe("bfloat16")) == ("bfloat16" not in onednn.dtypes())
    assert ("avx512_bf16" in cpu.host()["isa"]) or "bfloat16" not in onednn.dtypes()


def test_fused_bias_falls_back_where_onednn_does_not_take_it():
    x, w, b = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8)), jnp.arange(8.0)
    mixed = lambda x, w, b: conv.conv_bias_act(x, w, b.astype(jnp.bfloat16), (1, 1), "SAME", relu=True)
    jaxpr = str(jax.make_jaxpr(mixed)(x, w, b))  # a bias of another dtype: the plain convolution, + b, relu
    assert "jaxres_onednn_conv_forward" in jaxpr and "bias_forward" not in jaxpr
    close(mixed(x, w, b), jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN) + b))
    no_bias = lambda x, w: conv.conv_bias_act(x, w, None, (1, 1), "SAME", relu=True)
    assert "jaxres_onednn_conv_forward" in str(jax.make_jaxpr(no_bias)(x, w))
    close(no_bias(x, w), jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)))


def test_bfloat16():
    """Through oneDNN where this CPU has its bfloat16 convolutions (AVX-512 here), else XLA's; same values."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, 16, 32)) / 12, jnp.bfloat16)
    ours = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
    assert "float32" in onednn.dtypes()
    assert through_onednn(ours, x, w) == ("bfloat16" in onednn.dtypes())
    y = jax.jit(ours)(x, w)
    assert y.dtype == jnp.bfloat16
    close(y, lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), (1, 1), "SAME",
                                      dimension_numbers=DN), tol=2e-2)
    dw = jax.grad(lambda w: jnp.sum(ours(x, w).astype(jnp.float32)))(w)
    dw_ref = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(x.astype(jnp.float32), w, (1, 1), "SAME",
                                                                 dimension_numbers=DN)))(w.astype(jnp.float32))
    close(dw, dw_ref, tol=2e-2)


def test_what_onednn_does_not_take_stays_lax():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    for kw in ({"rhs_dilation": (2, 2)}, {"feature_group_count": 2}, {"preferred_element_type": jnp.float32}):
        wk = w[:, :, :2] if "feature_group_count" in kw else w
        fn = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN, **kw)
        assert not through_onednn(fn, x, wk)
        close(fn(x, wk), lax.conv_general_dilated(x, wk, (1, 1), "SAME", dimension_numbers=DN, **kw))
    nchw = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    assert not through_onednn(nchw, jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3)))


def test_vmap_and_jit_and_the_jvp_fallback():
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)  # a vmapped axis in front of the batch
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)
    ours = lambda x: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
    close(jax.jit(jax.vmap(ours))(xs), jax.vmap(lambda x: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                                                      dimension_numbers=DN))(xs))
    with pytest.raises(TypeError, match="custom_vjp"):  # forward mode: not through oneDNN ...
        jax.jvp(ours, (xs[0],), (xs[1],))
    with conv.forced("xla"):  # ... but through the xla backend, as documented
        y, t = jax.jvp(ours, (xs[0],), (xs[1],))
    close(t, lax.conv_general_dilated(xs[1], w, (1, 1), "SAME", dimension_numbers=DN))


@pytest.mark.parametrize("name, shape", [pytest.param("seed_cnn", (28, 28, 1), marks=pytest.mark.slow), ("seed_resnet", (32, 32, 3)),
                                         pytest.param("resnet20", (32, 32, 3), marks=pytest.mark.slow)])
def test_model_gradients_equal_the_xla_path(name, shape, monkeypatch):
    """The gradient of a training step's loss, oneDNN against XLA, on the same batch and weights.
    resnet20 has batch norm, whose gradients are sums with heavy cancellation (tests/test_train.py), and
    a forward value within float32 rounding of 0 can fall on the other side of a ReLU on one path: measured
    on an AVX2 CPU, one of 65,536 post-norm activations of stage1_block2 flipped, and the gradients below it
    moved by up to 3% of a leaf's largest entry (XLA's float32 was 2e-6 from float64 there, oneDNN 3e-2,
    relative L2 error up to 1.1e-2), so resnet20's leaves are compared by relative L2 error, 3e-2. Its batch norm is flax's on both sides here
    (``JAXRES_ONEDNN_NORM=0``), so that the convolutions are what is compared: oneDNN's batch norm is
    compared with float64 in tests/test_norms.py, closer to it than XLA's float32 one."""
    monkeypatch.setenv(norms.ENV, "0")
    model = models.get_model(name)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((8, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 8))
    variables = jax.jit(model.init)(jax.random.key(0), x)

    def loss(params):
        out = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        logits = out[0] if isinstance(out, tuple) else out
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = {}
    for backend in ("onednn", "xla"):
        with conv.forced(backend):  # and clears the traces made with the other one
            assert through_onednn(loss, variables["params"]) == (backend == "onednn")
            grads[backend] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert float(grads["onednn"][0]) == pytest.approx(float(grads["xla"][0]), rel=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads["onednn"][1]),
                            jax.tree.leaves(grads["xla"][1]), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if name == "resnet20":  # see the docstring: a ReLU mask may flip; relative L2 error per leaf
            assert np.linalg.norm(a - b) <= 3e-2 * np.linalg.norm(b) + 1e-12, jax.tree_util.keystr(path)
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()) + 1e-12,
                                       err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("shortcut, post_act", [("identity", True), pytest.param("projection", True, marks=pytest.mark.slow),
                                               ("identity", False)])
def test_fused_residual_blocks_equal_the_unfused_sum(shortcut, post_act):
    """Without normalization a block's second convolution, the shortcut (identity, option A's subsample and
    zero channels, or option B's projection at the stride-2 stage entries) and the ReLU run in one oneDNN
    call; where the branch is sown ("intermediates" mutable) the block adds in steps. Same values and
    gradients, and the same parameters (names and initial values)."""
    model = models.resnet20(norm="none", shortcut=shortcut, post_act=post_act)
    x = jnp.asarray(np.random.default_rng(7).random((2, 16, 16, 3)), jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]  # init sows (all collections mutable)
    fused = lambda p: model.apply({"params": p}, x)
    steps = lambda p: model.apply({"params": p}, x, mutable=["intermediates"])[0]
    assert str(jax.make_jaxpr(fused)(params)).count("jaxres_onednn_conv_bias_add_forward") == 9
    assert "bias_add_forward" not in str(jax.make_jaxpr(steps)(params))
    close(jax.jit(fused)(params), jax.jit(steps)(params))  # jitted: one compilation, not one per operation
    for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(lambda p: fused(p).sum()))(params)),
                    jax.tree.leaves(jax.jit(jax.grad(lambda p: steps(p).sum()))(params)), strict=True):
        close(a, b, tol=1e-4)
    fused_init = jax.jit(lambda k, x: model.init(k, x, mutable=["params"]))(jax.random.key(0), x)["params"]
    assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, fused_init, params)))


FALLBACK = """
import sys
from pathlib import Path
import jaxres.onednn as o
if sys.argv[1] == "no-library":
    o._libdnnl = lambda: None
else:
    o.EXTENSION_DIR = Path(sys.argv[2])
import jax, jax.numpy as jnp
from jaxres import conv, models
print(conv.describe())
model = models.seed_cnn(widths=(4,))
x = jnp.ones((2, 8, 8, 1))
print(float(jax.grad(lambda p: model.apply({"params": p}, x).sum())(model.init(jax.random.key(0), x)["params"])
            ["conv0"]["kernel"].sum()))
"""


@pytest.mark.parametrize("missing", ["no-library", "no-extension"])
def test_without_onednn_jaxres_falls_back_to_xla_with_a_note(missing, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != conv.ENV}  # the automatic choice
    out = subprocess.run([sys.executable, "-c", FALLBACK, missing, str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    note = out.stdout.splitlines()[0]
    why = "is not installed" if missing == "no-library" else "was not built at install time"
    assert note.startswith("xla-swapped (") and why in note
    float(out.stdout.splitlines()[1])  # and it computed


def test_pmap_on_4_devices_equals_jit():
    """Each simulated device calls the oneDNN handlers on its own shard (XLA calls them from several
    threads at once; the plan cache is locked): the pmapped convolution and its gradients equal the
    jitted one on the whole batch."""
    assert jax.local_device_count() == 4, "tests/conftest.py simulates 4 CPU devices"
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(8, 10, 10, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 64)), jnp.float32)
    r = jnp.asarray(rng.normal(size=(8, 10, 10, 64)), jnp.float32)

    def loss(x, w, r):
        return jnp.sum(conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN) * r)

    assert through_onednn(loss, x, w, r)
    value, (dx, dw) = jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w, r)
    split = lambda a: a.reshape(4, 2, *a.shape[1:])
    pv, (pdx, pdw) = jax.pmap(jax.value_and_grad(loss, (0, 1)), in_axes=(0, None, 0))(split(x), w, split(r))
    close(pv.sum(), value)
    close(pdx.reshape(dx.shape), dx)
    close(pdw.sum(0), dw)


def test_the_profile_benchmark_finds_the_convolutions_in_a_step(capsys, tmp_path):
    """benchmarks.onednn_profile: a step split into oneDNN's passes, the optimizer and the rest (a tiny step)."""
    import json

    from benchmarks import onednn_profile

    out_json = tmp_path / "profile.json"
    assert onednn_profile.main(["--model", "seed_cnn", "--shape", "8x8x1", "--steps", "2", "--batch", "4",
                                "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "inside oneDNN" in out and "gradients one after the other" in out.splitlines()[0]
    profile = json.loads(out_json.read_text())
    by_pass = profile["by_pass_ms"]
    for what in ("forward", "input gradient", "kernel gradient", "optimizer (Adam, timed alone)"):
        assert by_pass[what] > 0, what
    # the rows are the whole step: oneDNN's passes, the optimizer and what is left
    assert abs(sum(r["ms"] for r in profile["rows"]) - profile["step_ms"]) < 1e-6 * profile["step_ms"]
    shapes = {r["detail"] for r in profile["rows"] if r["pass"] == "forward"}
    assert shapes == {"8x8 1->64", "8x8 64->32", "8x8 32->64"}, shapes
    with pytest.raises(SystemExit):
        onednn_profile.main(["--shape", "28x28"])
