"""compute.precision=bfloat16: what runs in bfloat16 and what stays float32, and oneDNN's bfloat16 convolutions.

Tolerance of the convolution tests: both oneDNN's bfloat16 passes and XLA's are compared with float32 on the
same (bfloat16-rounded) inputs, by relative L2 error ||ours - f32|| / ||f32||. One bfloat16 rounding of
a result costs about 1.7e-3 (a unit roundoff of 2^-9 spread over the entries); oneDNN accumulates in float32
and rounds each result once, fused bias, shortcut and ReLU included, so it must stay within 4e-3. XLA's
bfloat16 rounds after every unfused operation and flips ReLU masks near 0 (observed up to 1e-1 for a bias
gradient); oneDNN must never be worse than XLA's bfloat16 on the same inputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxres import config, conv, models, onednn, train

DN = ("NHWC", "HWIO", "NHWC")
BF16, F32 = jnp.bfloat16, jnp.float32
ONE_ROUNDING = 4e-3
CASES = [  # batch, size, channels in, out, stride, padding
    (1, 7, 1, 16, 1, "SAME"),
    (2, 8, 3, 16, 2, ((1, 1), (1, 1))),
    (2, 10, 64, 32, 1, "SAME"),
    (8, 28, 32, 64, 1, ((1, 1), (1, 1))),
]


def rel(a, ref):
    a, ref = np.asarray(a, np.float32), np.asarray(ref, np.float32)
    return float(np.linalg.norm(a - ref) / (np.linalg.norm(ref) + 1e-30))


@pytest.mark.skipif("bfloat16" not in onednn.dtypes(), reason="no oneDNN bfloat16 convolutions on this CPU")
@pytest.mark.parametrize("kind", ["conv", "bias_relu", "bias_add_relu"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[2]}to{c[3]}-s{c[4]}-{c[1]}x{c[1]}-n{c[0]}")
def test_bfloat16_onednn_passes_are_within_one_rounding_of_float32(case, kind, monkeypatch):
    monkeypatch.setenv(conv.ENV, "onednn")
    n, size, cin, cout, stride, padding = case
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(n, size, size, cin)), BF16)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), BF16)
    b = jnp.asarray(rng.normal(size=(cout,)), BF16)
    y_shape = lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN).shape
    s, r = (jnp.asarray(rng.normal(size=y_shape), BF16) for _ in range(2))
    strides = (stride, stride)

    def ours(x, w, b, s):
        if kind == "conv":
            return conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)
        if kind == "bias_relu":
            return conv.conv_bias_act(x, w, b, strides, padding, relu=True)
        return conv.conv_bias_add_act(x, w, b, s, strides, padding, relu=True)

    def lax_ref(x, w, b, s):
        y = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)
        if kind == "conv":
            return y
        return jax.nn.relu(y + b + (s if kind == "bias_add_relu" else 0))

    def value_and_grads(fn, *args):
        loss = lambda *a: jnp.sum(fn(*a).astype(F32) * r.astype(F32))
        return jax.jit(fn)(*args), jax.jit(jax.grad(loss, (0, 1, 2, 3)))(*args)

    args = (x, w, b, s)
    ref = value_and_grads(lax_ref, *(a.astype(F32) for a in args))
    mine = value_and_grads(ours, *args)
    xla = value_and_grads(lax_ref, *args)
    assert "jaxres_onednn_conv_" in str(jax.make_jaxpr(ours)(*args))
    assert mine[0].dtype == BF16 and all(g.dtype == BF16 for g in mine[1])
    for name, a, x_, f in zip(["y", "dx", "dw", "db", "ds"], [mine[0], *mine[1]], [xla[0], *xla[1]],
                               [ref[0], *ref[1]]):
        if not np.any(np.asarray(f, np.float32)):
            continue  # no bias or shortcut in this kind
        assert rel(a, f) < ONE_ROUNDING, (name, rel(a, f))
        assert rel(a, f) <= rel(x_, f) + 1e-3, (name, rel(a, f), rel(x_, f))


@pytest.mark.parametrize("name,norm", [("seed_resnet", "none"), pytest.param("resnet20", "batch", marks=pytest.mark.slow)])
def test_a_bfloat16_step_keeps_float32_parameters_state_and_loss(name, norm):
    cfg = config.replace(config.replace(config.RunConfig(), "model.name", name), "compute.precision", "bfloat16")
    cfg = config.replace(cfg, "model.norm", norm)
    model = models.from_config(cfg, 10)
    assert model.dtype == BF16
    state = train.create_train_state(model, jax.random.key(0), (16, 16, 3), optax.adam(1e-3))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.random((8, 16, 16, 3)), F32), "label": jnp.asarray(rng.integers(0, 10, 8))}
    new, metrics = train.jit_train_step(donate=False)(state, batch, jax.random.key(1))
    trees = {"params": new.params, "opt_state": new.opt_state, "batch_stats": new.batch_stats}
    dtypes = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(trees) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert dtypes == {"float32"}
    assert metrics["loss_sum"].dtype == F32 and np.isfinite(float(metrics["loss_sum"]))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new.params, state.params)
    assert all(jax.tree_util.tree_leaves(changed))  # bf16 gradients still move every float32 parameter
    logits = model.apply({"params": new.params, **({"batch_stats": new.batch_stats} if norm == "batch" else {})},
                         batch["image"])
    assert logits.dtype == F32  # the softmax and the loss are computed from float32 logits
    _, inter = model.apply({"params": new.params, **({"batch_stats": new.batch_stats} if norm == "batch" else {})},
                           batch["image"], mutable=["intermediates"])
    branch = jax.tree_util.tree_leaves(inter["intermediates"])[0]
    assert branch.dtype == BF16  # activations in bfloat16


def test_precision_is_part_of_a_runs_identity_and_name():
    base = config.RunConfig()
    bf = config.replace(base, "compute.precision", "bfloat16")
    assert config.identity(bf) != config.identity(base)
    assert config.run_name(bf) != config.run_name(base)
    assert config.differences(config.identity(base), config.identity(bf)) == ["compute.precision"]
    # a run folder made before the compute section existed matches a float32 run, not a bfloat16 one
    old = {k: v for k, v in config.identity(base).items() if k != "compute"}
    assert config.differences(old, config.identity(base)) == []
    assert config.differences(old, config.identity(bf)) == ["compute.precision"]
    with pytest.raises(config.ConfigError, match="compute.precision='float16' is not one of float32, bfloat16"):
        config.replace(base, "compute.precision", "float16")
    assert isinstance(models.get_model("seed_cnn", dtype=BF16), models.PlainCNN)
