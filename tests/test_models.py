"""Model behaviour: residual identity, gradient flow, shapes and parameter counts, knobs, bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxres import models, catalog

MNIST, CIFAR = (28, 28, 1), (32, 32, 3)


def init(model, shape, batch=2, seed=0):
    x = jax.random.uniform(jax.random.key(seed + 1), (batch, *shape))
    return model.init(jax.random.key(seed), x), x


class Stack(nn.Module):
    """A stack of seed residual blocks (32 -> 64 -> 32 channels), nothing else."""

    n: int
    zero_init_residual: bool = False
    post_act: bool = True
    shortcut: str = "identity"

    @nn.compact
    def __call__(self, x):
        for i in range(self.n):
            x = models.ResidualBlock(64, 32, shortcut=self.shortcut, zero_init_residual=self.zero_init_residual,
                                     post_act=self.post_act, name=f"block{i}")(x)
        return x


# ------------------------------------------------------------------ residual identity
@pytest.mark.parametrize("norm", catalog.NORMS)
def test_block_with_zero_branch_is_identity_on_nonnegative_input(norm):
    block = models.ResidualBlock(64, 32, zero_init_residual=True, norm=models.make_norm(norm, False, None, jnp.float32))
    x = jnp.abs(jax.random.normal(jax.random.key(3), (4, 8, 8, 32))) * 10.0
    variables = block.init(jax.random.key(0), x)
    np.testing.assert_array_equal(np.asarray(block.apply(variables, x)), np.asarray(x))
    # The branch really is zero, not skipped: the same weights without the shortcut give all zeros.
    plain = block.clone(shortcut="none")
    assert float(jnp.max(jnp.abs(plain.apply(variables, x)))) == 0.0


def test_jacobian_of_identity_stack_is_identity():
    stack = Stack(n=4, zero_init_residual=True)
    x = jax.random.uniform(jax.random.key(1), (1, 3, 3, 32), minval=0.1, maxval=2.0)
    variables = stack.init(jax.random.key(0), x)
    jac = jax.jacobian(lambda v: stack.apply(variables, v.reshape(x.shape)).ravel())(x.ravel())
    np.testing.assert_array_equal(np.asarray(jac), np.eye(x.size, dtype=np.float32))
    # Random weights: the Jacobian is not the identity, so the check above can fail.
    variables = Stack(n=4).init(jax.random.key(0), x)
    jac = jax.jacobian(lambda v: Stack(n=4).apply(variables, v.reshape(x.shape)).ravel())(x.ravel())
    assert float(jnp.max(jnp.abs(jac - jnp.eye(x.size)))) > 1e-2


@pytest.mark.parametrize("shortcut, holds", [("identity", True), ("none", False)])
def test_equation_5_x_L_minus_x_l_is_sum_of_branches(shortcut, holds):
    """x_L = x_l + sum_{i=l}^{L-1} F(x_i) for identity shortcuts without post-addition ReLU."""
    model = models.ResNet(stage_sizes=(6,), widths=(32,), inner_widths=(64,), stem_width=32, head="flatten",
                          post_act=False, shortcut=shortcut)
    variables, x = init(model, MNIST)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    outs = [inter[f"stage0_block{i}"]["__call__"][0] for i in range(6)]       # x_1 .. x_6
    branches = [inter[f"stage0_block{i}"]["branch"][0] for i in range(6)]     # F(x_0) .. F(x_5)
    scale = float(jnp.max(jnp.abs(outs[-1])))
    for l in range(1, 6):
        err = float(jnp.max(jnp.abs(outs[-1] - outs[l - 1] - sum(branches[l:]))))
        assert (err <= 1e-5 * scale) == holds, (l, err, scale)


# ------------------------------------------------------------------ gradient flow
# resnet56 against plain56 without normalization: tests/test_train.py, on the per-layer series recorded
# during training (step 0 is the initialisation).


# ------------------------------------------------------------------ padding at stride 2 (He et al.)
def _delta_block_branch_and_input(padding, size=8, cin=4, cout=8, monkeypatch=None):
    """A stride-2 option-A block whose two convolutions are centred deltas (channel c -> c): the branch
    output is relu(x) sampled at the pixels the first convolution centres on."""
    monkeypatch.setattr(models, "PAD", padding)
    block = models.ResidualBlock(cout, cout, strides=2, shortcut="identity", post_act=False)
    x = jax.random.uniform(jax.random.key(0), (2, size, size, cin), minval=0.1, maxval=1.0)
    variables = block.init(jax.random.key(1), x)
    p = jax.tree.map(jnp.zeros_like, variables["params"])
    k0 = np.zeros((3, 3, cin, cout), np.float32)
    k1 = np.zeros((3, 3, cout, cout), np.float32)
    k0[1, 1, np.arange(cin), np.arange(cin)] = 1.0
    k1[1, 1, np.arange(cout), np.arange(cout)] = 1.0
    p["conv0"]["kernel"], p["conv1"]["kernel"] = jnp.asarray(k0), jnp.asarray(k1)
    out, state = block.apply({"params": p}, x, mutable=["intermediates"])
    return state["intermediates"]["branch"][0], x, out


@pytest.mark.parametrize("size", [8, pytest.param(7, marks=pytest.mark.slow)])
def test_stride_2_branch_samples_the_same_pixel_as_the_option_a_shortcut(size, monkeypatch):
    branch, x, out = _delta_block_branch_and_input(models.PAD, size, monkeypatch=monkeypatch)
    kept = x[:, ::2, ::2, :]  # what the option-A shortcut takes: pixel (2i, 2j)
    assert branch.shape == (2, (size + 1) // 2, (size + 1) // 2, 8) and kept.shape[1:3] == branch.shape[1:3]
    np.testing.assert_array_equal(np.asarray(branch[..., :4]), np.asarray(kept))
    np.testing.assert_array_equal(np.asarray(out[..., :4]), np.asarray(2 * kept))  # branch + shortcut, aligned
    assert float(jnp.abs(out[..., 4:]).max()) == 0.0


def test_same_padding_at_stride_2_would_misalign_branch_and_shortcut(monkeypatch):
    """The regression the explicit (1, 1) padding fixes: lax's "SAME" pads (0, 1) at stride 2 on an even
    size, so the branch samples pixel (2i+1, 2j+1) while the shortcut takes (2i, 2j)."""
    branch, x, _ = _delta_block_branch_and_input("SAME", 8, monkeypatch=monkeypatch)
    assert not np.array_equal(np.asarray(branch[..., :4]), np.asarray(x[:, ::2, ::2, :]))
    np.testing.assert_array_equal(np.asarray(branch[..., :4]), np.asarray(x[:, 1::2, 1::2, :]))


@pytest.mark.parametrize("shape, sizes", [(CIFAR, (32, 16, 8)), (MNIST, (28, 14, 7)), ((15, 15, 3), (15, 8, 4))])
def test_cifar_resnet_stage_output_shapes(shape, sizes):
    model = models.get_model("resnet20")
    x = jnp.zeros((2, *shape))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    _, state = jax.eval_shape(lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
                              variables)
    inter = state["intermediates"]
    for stage, (size, width) in enumerate(zip(sizes, (16, 32, 64))):
        assert inter[f"stage{stage}_block2"]["__call__"][0].shape == (2, size, size, width)


@pytest.mark.slow
def test_seed_networks_are_unchanged_by_the_explicit_padding(monkeypatch):
    """At stride 1, (1, 1) is exactly what "SAME" pads: the seed networks' outputs and gradients are bitwise equal."""
    x = jax.random.uniform(jax.random.key(1), (4, *MNIST))
    y = jnp.arange(4)
    results = {}
    for padding in (models.PAD, "SAME"):
        monkeypatch.setattr(models, "PAD", padding)
        for name in ("seed_cnn", "seed_resnet"):
            model = models.get_model(name)
            params = model.init(jax.random.key(0), x)["params"]
            loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
            results[padding, name] = jax.tree.leaves((model.apply({"params": params}, x), jax.grad(loss)(params)))
    for name in ("seed_cnn", "seed_resnet"):
        for a, b in zip(results[models.PAD, name], results["SAME", name], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resnet20_equals_a_pytorch_reference_on_the_same_weights():
    """He et al.'s CIFAR ResNet-20 written in PyTorch (padding=1, option A, BN, global pooling; eval mode)
    given our weights and batch statistics: the logits agree to float noise."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    model = models.get_model("resnet20", norm="batch")
    x = jax.random.normal(jax.random.key(1), (4, *CIFAR))
    variables = model.init(jax.random.key(0), x)
    rng = np.random.default_rng(0)  # non-trivial running statistics, so eval-mode BN does something
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if a.ndim else a, jnp.float32),
                         variables["batch_stats"])
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: a - 1.0 if path[-1].key == "mean" else a, stats)
    variables = {"params": variables["params"], "batch_stats": stats}
    ours = np.asarray(model.apply(variables, x))
    P, S = variables["params"], variables["batch_stats"]
    t = lambda a: torch.from_numpy(np.array(a))

    def conv(h, p, stride=1):
        return F.conv2d(h, t(p["kernel"]).permute(3, 2, 0, 1), stride=stride, padding=1)

    def bn(h, p, s):
        return F.batch_norm(h, t(s["mean"]), t(s["var"]), t(p["scale"]), t(p["bias"]), training=False, eps=1e-5)

    h = t(x).permute(0, 3, 1, 2)
    h = F.relu(bn(conv(h, P["stem"]), P["stem_norm"], S["stem_norm"]))
    for stage in range(3):
        for block in range(3):
            name = f"stage{stage}_block{block}"
            p, s = P[name], S[name]
            stride = 2 if stage > 0 and block == 0 else 1
            r = F.relu(bn(conv(h, p["conv0"], stride), p["norm0"], s["norm0"]))
            r = bn(conv(r, p["conv1"]), p["norm1"], s["norm1"])
            short = h[:, :, ::stride, ::stride]
            short = F.pad(short, (0, 0, 0, 0, 0, r.shape[1] - short.shape[1]))
            h = F.relu(r + short)
    ref = F.linear(h.mean(dim=(2, 3)), t(P["head"]["kernel"]).T, t(P["head"]["bias"])).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_cifar_presets_use_he_initialization():
    """N(0, 2/fan_in) kernels: the stem's empirical std is sqrt(2 / 27), the seed networks stay Glorot."""
    params = models.get_model("resnet110").init(jax.random.key(0), jnp.zeros((1, *CIFAR)))["params"]
    k = np.asarray(params["stage2_block5"]["conv1"]["kernel"])  # 3x3x64x64: fan_in 576
    assert abs(k.std() / np.sqrt(2 / 576) - 1) < 0.03
    seed = models.seed_cnn().init(jax.random.key(0), jnp.zeros((1, *MNIST)))["params"]["conv1"]["kernel"]
    limit = np.sqrt(6 / (9 * 64 + 9 * 32))  # Glorot uniform bound
    assert float(jnp.abs(seed).max()) <= limit and float(jnp.abs(seed).max()) > 0.95 * limit


# ------------------------------------------------------------------ shapes and parameter counts
EXPECTED_PARAMS = {  # analytic counts, 10 classes
    ("seed_cnn", MNIST): 9 * (1 * 64 + 64 * 32 + 32 * 64 + 64 * 32 + 32 * 64) + (64 + 32 + 64 + 32 + 64)
    + 28 * 28 * 64 * 10 + 10,
    ("seed_resnet", MNIST): 9 * 1 * 32 + 32 + 5 * (9 * 32 * 64 + 64 + 9 * 64 * 32 + 32) + 28 * 28 * 32 * 10 + 10,
}


@pytest.mark.parametrize("name", list(models.PRESETS))
@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["28x28x1", "32x32x3"])
def test_every_preset_shapes_and_parameter_counts(name, shape):
    model = models.get_model(name)
    x = jnp.zeros((3, *shape))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (3, 10)
    n = models.count_params(variables["params"])
    if (name, shape) in EXPECTED_PARAMS:
        assert n == EXPECTED_PARAMS[name, shape]
    facts = catalog.PRESETS[name]
    if facts.twin:  # a ResNet and its plain twin have the same parameters
        twin = models.get_model(facts.twin)
        assert models.count_params(jax.eval_shape(twin.init, jax.random.key(0), x)["params"]) == n
    assert models.count_convs(variables["params"]) == facts.depth - 1  # the declared depth: convs + the dense head


@pytest.mark.parametrize("name, paper", [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_cifar_resnet_parameter_counts_match_he_et_al(name, paper):
    variables = jax.eval_shape(models.get_model(name).init, jax.random.key(0), jnp.zeros((1, *CIFAR)))
    assert abs(models.count_params(variables["params"]) / paper - 1) < 0.02


def test_projection_shortcut_adds_parameters_only_at_stage_entries():
    x = jnp.zeros((1, *CIFAR))
    a = models.count_params(jax.eval_shape(models.resnet20().init, jax.random.key(0), x)["params"])
    b = models.count_params(jax.eval_shape(models.resnet20(shortcut="projection").init, jax.random.key(0), x)["params"])
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs, each with batch norm
    a = models.count_params(jax.eval_shape(models.resnet20(norm="none").init, jax.random.key(0), x)["params"])
    b = models.count_params(jax.eval_shape(models.resnet20(norm="none", shortcut="projection").init,
                                           jax.random.key(0), x)["params"])
    assert b - a == (16 * 32 + 32) + (32 * 64 + 64)  # without a norm: two 1x1 convs with bias


# ------------------------------------------------------------------ knobs
@pytest.mark.parametrize("norm", catalog.NORMS)
@pytest.mark.parametrize("name", ["seed_cnn", "seed_resnet", "resnet20"])
def test_norm_knob(name, norm):
    model = models.get_model(name, norm=norm)
    variables, x = init(model, CIFAR, batch=4)
    assert ("batch_stats" in variables) == (norm == "batch")
    if norm == "batch":
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(variables["batch_stats"])
    else:
        logits = model.apply(variables, x, train=True)
    assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_zero_init_residual_makes_every_block_start_as_identity():
    model = models.seed_resnet(zero_init_residual=True)
    variables, x = init(model, MNIST)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    first = inter["stage0_block0"]["__call__"][0]
    for i in range(1, 5):
        np.testing.assert_array_equal(np.asarray(inter[f"stage0_block{i}"]["__call__"][0]), np.asarray(first))


def test_bfloat16_computes_in_bfloat16_with_float32_params_and_logits():
    model = models.get_model("resnet20", dtype=jnp.bfloat16, norm="batch")
    variables, x = init(model, CIFAR)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    assert state["intermediates"]["stem"]["__call__"][0].dtype == jnp.bfloat16
    assert model.apply(variables, x).dtype == jnp.float32


def test_num_classes_knob():
    model = models.get_model("seed_cnn", num_classes=100)
    variables, x = init(model, CIFAR)
    assert model.apply(variables, x).shape == (2, 100)


# ------------------------------------------------------------------ bad input
def test_unknown_preset_names_the_problem():
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'.*resnet20"):
        models.get_model("resnet21")


@pytest.mark.parametrize("shape", [(28, 28, 1), (2, 28, 28), (1, 2, 28, 28, 1)])
def test_input_of_wrong_rank_names_the_problem(shape):
    model = models.seed_cnn()
    with pytest.raises(ValueError, match=r"rank 4"):
        model.init(jax.random.key(0), jnp.zeros(shape))


def test_unknown_norm_names_the_problem():
    with pytest.raises(ValueError, match=r"unknown norm 'batchnorm'"):
        init(models.get_model("resnet20", norm="batchnorm"), CIFAR)


def test_a_pre_activation_block_plugs_into_the_resnet_unchanged():
    """models.PreActBlock through ResNet(block=...): with its branch zeroed it is the exact identity, also on
    negative inputs (no ReLU after the addition), where the post-activation block gives relu(x); it trains."""
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
    for norm in ("none", "batch"):
        kw = {"inner": 16, "out": 16, "zero_init_residual": True}
        if norm == "batch":
            kw["norm"] = models.make_norm("batch", False, None, jnp.float32)
        pre, post = models.PreActBlock(**kw), models.ResidualBlock(**kw)
        if norm == "none":  # with a norm, post's zero-init is its last scale: relu(x) either way
            vp = pre.init(jax.random.key(0), x)
            assert jnp.array_equal(pre.apply(vp, x), x)
            vq = post.init(jax.random.key(0), x)
            assert jnp.array_equal(post.apply(vq, x), jax.nn.relu(x)) and bool(jnp.any(x < 0))
        else:
            vp = pre.init(jax.random.key(0), x)
            assert jnp.allclose(pre.apply(vp, x), x)
    net = models.ResNet(stage_sizes=(2, 2), widths=(16, 32), stem_width=16, norm="batch", block=models.PreActBlock)
    images = jax.random.uniform(jax.random.key(2), (4, 16, 16, 3))
    v = net.init(jax.random.key(0), images)
    assert "norm0" in v["params"]["stage0_block0"] and "norm1" in v["params"]["stage1_block0"]
    logits, _ = net.apply(v, images, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 10)
    g = jax.grad(lambda p: net.apply({**v, "params": p}, images, train=True, mutable=["batch_stats"])[0].sum())(
        v["params"])
    assert float(jnp.abs(g["stem"]["kernel"]).sum()) > 0  # the gradient reaches the first layer
