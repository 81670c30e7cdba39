"""Model behaviour: residual identity, gradient flow, shapes and parameter counts, knobs, bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxres import models

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
@pytest.mark.parametrize("norm", models.NORMS)
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
def test_gradient_reaches_first_layer_of_resnet56_but_vanishes_in_plain56():
    x = jax.random.uniform(jax.random.key(1), (8, *CIFAR))
    y = jnp.arange(8) % 10
    norms = {}
    for name in ("resnet56", "plain56"):
        model = models.get_model(name)
        params = model.init(jax.random.key(0), x)["params"]
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
        norms[name] = float(jnp.linalg.norm(jax.grad(loss)(params)["stem"]["kernel"]))
    ratio = norms["resnet56"] / max(norms["plain56"], 1e-30)
    print(f"first-conv gradient norm: resnet56 {norms['resnet56']:.3g}, plain56 {norms['plain56']:.3g}, "
          f"ratio {ratio:.3g}")
    assert norms["resnet56"] > 1e-3
    assert ratio > 1e3


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
    twin = "seed_plain_twin" if name == "seed_resnet" else name.replace("resnet", "plain")
    if twin != name:  # a ResNet and its plain twin have the same parameters
        assert models.count_params(jax.eval_shape(models.get_model(twin).init, jax.random.key(0), x)["params"]) == n
    convs = models.count_convs(variables["params"])
    depth = {"seed_cnn": 5, "seed_resnet": 11, "seed_plain_twin": 11}.get(name)
    assert convs == (depth if depth else int(name.lstrip("resnetplain")) - 1)


@pytest.mark.parametrize("name, paper", [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_cifar_resnet_parameter_counts_match_he_et_al(name, paper):
    variables = jax.eval_shape(models.get_model(name).init, jax.random.key(0), jnp.zeros((1, *CIFAR)))
    assert abs(models.count_params(variables["params"]) / paper - 1) < 0.02


def test_projection_shortcut_adds_parameters_only_at_stage_entries():
    x = jnp.zeros((1, *CIFAR))
    a = models.count_params(jax.eval_shape(models.resnet20().init, jax.random.key(0), x)["params"])
    b = models.count_params(jax.eval_shape(models.resnet20(shortcut="projection").init, jax.random.key(0), x)["params"])
    assert b - a == (16 * 32 + 32) + (32 * 64 + 64)  # two 1x1 convs with bias


# ------------------------------------------------------------------ knobs
@pytest.mark.parametrize("norm", models.NORMS)
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
