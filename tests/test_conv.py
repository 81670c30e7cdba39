"""jaxres.conv: the swapped CPU kernel-gradient rule (backend "xla-swapped", the CPU default where oneDNN
is unavailable) gives lax's gradients and only takes the cases it should; the backend is an explicit choice.

Tolerance: the custom rule sums the same N*H*W products as XLA's kernel-gradient convolution in
another order, so the two differ by f32 rounding only; we allow 1e-5 of the largest gradient
entry (observed: ~1e-7 relative).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxres import config, conv, models, train

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def swapped(monkeypatch):
    """These tests are about the xla-swapped backend (oneDNN has its own, tests/test_onednn.py)."""
    monkeypatch.setenv(conv.ENV, "xla-swapped")


def _uses_custom_rule(fn, *args) -> bool:
    """Whether the forward function ``fn`` goes through the custom rule (under grad it is inlined)."""
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def _loss(conv_fn, x, w, r, **kw):
    return jnp.sum(conv_fn(x, w, window_strides=kw.pop("strides", (1, 1)), dimension_numbers=DN, **kw) * r)


@pytest.mark.parametrize("kernel, padding", [
    ((3, 3), "SAME"), ((3, 3), "VALID"), ((3, 3), ((0, 2), (1, 0))), ((5, 3), "SAME"), ((1, 1), "VALID"),
])
def test_custom_kernel_gradient_matches_lax(kernel, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 9, 7, 6)), jnp.float32)  # 6 channels in, 3 out: the rule applies
    w = jnp.asarray(rng.normal(size=(*kernel, 6, 3)), jnp.float32)
    y = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)
    r = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    loss = lambda x, w: _loss(conv.conv_general_dilated, x, w, r, padding=padding)
    ours = jax.grad(loss, (0, 1))
    ref = jax.grad(lambda x, w: _loss(lax.conv_general_dilated, x, w, r, padding=padding), (0, 1))
    assert _uses_custom_rule(loss, x, w)
    np.testing.assert_array_equal(conv.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN), y)
    for got, want in zip(ours(x, w), ref(x, w)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("case", ["fewer_channels_in", "stride2", "dilated", "grouped"])
def test_other_convolutions_are_plain_lax(case):
    x = jnp.ones((2, 8, 8, 6 if case != "fewer_channels_in" else 2))
    w = jnp.ones((3, 3, x.shape[-1] // (2 if case == "grouped" else 1), 4))
    kw = {"padding": "SAME", "strides": (2, 2) if case == "stride2" else (1, 1)}
    if case == "dilated":
        kw["rhs_dilation"] = (2, 2)
    if case == "grouped":
        kw["feature_group_count"] = 2
    assert not _uses_custom_rule(lambda x, w: _loss(conv.conv_general_dilated, x, w, 1.0, **dict(kw)), x, w)


def test_switch_turns_the_rule_off(monkeypatch):
    x, w = jnp.ones((2, 8, 8, 6)), jnp.ones((3, 3, 6, 4))
    def fn(x, w):  # a new function each time: traces are cached per function
        return _loss(conv.conv_general_dilated, x, w, 1.0, padding="SAME")

    assert _uses_custom_rule(fn, x, w)
    monkeypatch.delenv(conv.ENV)
    monkeypatch.setenv("JAXRES_CPU_FAST_PATH", "0")
    assert conv.backend() == "xla" and not conv.enabled()
    assert not _uses_custom_rule(lambda x, w: fn(x, w), x, w)


@pytest.mark.parametrize("name", [pytest.param("seed_cnn", marks=pytest.mark.slow), "seed_resnet"])
def test_model_gradients_match_the_plain_path(name, monkeypatch):
    model = models.get_model(name)
    state = train.create_train_state(model, jax.random.key(0), (12, 12, 3))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((8, 12, 12, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 8))

    def grads():
        loss = lambda p: jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, x))[jnp.arange(8), y])
        return jax.jit(jax.grad(loss))(state.params)  # jit: traced afresh for each setting below

    assert _uses_custom_rule(lambda p: model.apply({"params": p}, x), state.params)
    fast = grads()
    monkeypatch.setenv(conv.ENV, "xla")
    assert not _uses_custom_rule(lambda p: model.apply({"params": p}, x), state.params)
    plain = grads()
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fast), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-12,
                                   err_msg=jax.tree_util.keystr(path))


def test_the_backend_is_an_explicit_visible_choice(monkeypatch):
    from jaxres import onednn

    x, w = jnp.ones((2, 8, 8, 6)), jnp.ones((3, 3, 6, 4))
    monkeypatch.delenv(conv.ENV, raising=False)
    assert conv.backend() == ("onednn" if onednn.load()[0] else "xla-swapped")  # the CPU default
    monkeypatch.setenv(conv.ENV, "xla")
    assert conv.backend() == "xla" and not _uses_custom_rule(lambda x, w: _loss(conv.conv_general_dilated, x, w, 1.0,
                                                                                padding="SAME"), x, w)
    monkeypatch.setenv(conv.ENV, "cudnn")
    with pytest.raises(ValueError, match=r"\$JAXRES_CONV: compute.conv='cudnn' is not one of auto, onednn, xla-swapped, xla"):
        conv.backend()
    monkeypatch.delenv(conv.ENV)
    with conv.forced("xla"):  # by hand, and clears what was compiled with the other choice
        assert conv.backend() == "xla" and conv.describe().startswith("xla")
        assert not _uses_custom_rule(lambda x, w: _loss(conv.conv_general_dilated, x, w, 1.0, padding="SAME"), x, w)
    assert conv.backend() in ("onednn", "xla-swapped")
    with conv.traced_with(config.ComputeConfig(conv="xla")):  # what jaxres.run does with a run's compute section
        assert conv.backend() == "xla"
        with conv.traced_with(config.ComputeConfig(fast_path=False)):  # off the fast path, auto means xla
            assert conv.backend() == "xla"
    assert conv.backend() in ("onednn", "xla-swapped")
    assert not hasattr(conv, "use") and not hasattr(conv, "set_backend")  # no process-wide setting to leave behind


def test_onednn_is_built_and_loaded_where_it_can_be():
    """`pip install` on x86-64 Linux with a C++ compiler builds jaxres's oneDNN extension. Were the build
    to fail quietly there, every test of tests/test_onednn.py would skip and the suite stay green; this
    test fails instead."""
    import platform
    import shutil
    import sys

    from jaxres import onednn

    if sys.platform != "linux" or platform.machine() != "x86_64" or not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("not a machine the extension is built on")
    ok, what = onednn.load()
    assert ok, what


@pytest.mark.parametrize("order", [("xla", "winograd"), ("winograd", "xla")])
def test_a_models_convolutions_follow_the_config_it_was_built_from(order):
    """Two models from configs that differ only in compute.conv, in one process, in either order, with no
    no backend forced: each traces to its own convolutions."""
    from jaxres import config, train

    x = jnp.zeros((2, 8, 8, 3), jnp.float32)
    counts = {}
    for name in order:
        cfg = config.replace(config.RunConfig(), "compute.conv", name)
        model = models.from_config(config.replace(cfg, "model.name", "seed_cnn"), 10)
        state = train.create_train_state(model, jax.random.key(0), (8, 8, 3))
        grad = jax.jit(jax.grad(lambda p: model.apply({"params": p}, x).sum()))
        counts[name] = grad.lower(state.params).as_text().count("stablehlo.convolution")
        grad(state.params)  # and it runs
    # xla: every pass of every layer is a convolution; winograd: the 32/64-channel layers are GEMMs, and the
    # stem's passes go to the direct path (oneDNN's custom calls where it loaded, else two convolutions)
    assert counts["xla"] >= 10 and counts["winograd"] <= 2, counts
    assert conv.settings() == config.from_env()  # nothing left behind in the process
