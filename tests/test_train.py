"""Train and eval steps: learning, jit vs pmap equivalence, masked evaluation, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxres import metrics, models, train

MNIST, CIFAR = (28, 28, 1), (32, 32, 3)


def batch_of(shape, n, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"image": np.asarray(jax.random.uniform(k1, (n, *shape))),
            "label": np.asarray(jax.random.randint(k2, (n,), 0, 10), np.int32)}


def state_for(name, shape, **knobs):
    return train.create_train_state(models.get_model(name, **knobs), jax.random.key(0), shape)


def evaluate(state, batch):
    return metrics.summarize(train.jit_eval_step()(state, batch))


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    state = state_for("seed_cnn", MNIST)
    batch = batch_of(MNIST, 32)
    before = evaluate(state, batch)["loss"]
    state, m = train.jit_train_step()(state, batch, jax.random.key(1))
    after = evaluate(state, batch)["loss"]
    assert int(state.step) == 1
    assert metrics.summarize(m)["loss"] == pytest.approx(before, rel=1e-5)  # train loss is at the old params
    assert after < before


@pytest.mark.parametrize("name", ["seed_cnn", "seed_resnet"])
def test_a_few_dozen_steps_overfit_a_small_batch(name):
    state = state_for(name, MNIST)
    batch = batch_of(MNIST, 16, seed=1)  # random labels: only memorisation fits them
    step = train.jit_train_step()
    for i in range(40):
        state, _ = step(state, batch, jax.random.key(i))
    result = evaluate(state, batch)
    assert result["accuracy"] == 1.0 and result["loss"] < 0.1, result


@pytest.mark.parametrize("name, knobs", [("seed_cnn", {}), ("resnet20", {"norm": "batch"})])
def test_pmap_on_4_devices_equals_jit_on_one_with_the_same_global_batch(name, knobs):
    """Tolerance: float32 reductions run in a different order (per-device partial sums), and Adam
    divides by sqrt(v), which magnifies those rounding differences for gradient entries near
    zero. So after 3 Adam steps (lr 1e-3) parameters agree to rtol 1e-4 / atol 1e-4, a tenth of
    one step's size, and the mean absolute difference is below 1e-7."""
    assert jax.local_device_count() == 4, "tests/conftest.py simulates 4 CPU devices"
    shape = CIFAR
    state = state_for(name, shape, **knobs)
    batches = [batch_of(shape, 16, seed=s) for s in range(3)]

    jit_state, jit_step = state, train.jit_train_step(donate=False)
    jit_metrics = []
    for i, b in enumerate(batches):
        jit_state, m = jit_step(jit_state, b, jax.random.key(i))
        jit_metrics.append(metrics.summarize(m))

    p_state, p_step = train.replicate(state), train.pmap_train_step(donate=False)
    p_metrics = []
    for i, b in enumerate(batches):
        p_state, m = p_step(p_state, train.shard(b, 4), jax.random.key(i))
        p_metrics.append(metrics.summarize(m))
    p_state = train.unreplicate(p_state)

    assert int(p_state.step) == 3
    for a, b in zip(jit_metrics, p_metrics):
        assert a["count"] == b["count"] == 16
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["accuracy"] == b["accuracy"]
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    jax.tree_util.tree_map(close, jit_state.params, p_state.params)
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: jnp.abs(a - b), jit_state.params, p_state.params))
    assert float(sum(d.sum() for d in diffs) / sum(d.size for d in diffs)) < 1e-7
    jax.tree_util.tree_map(close, jit_state.batch_stats, p_state.batch_stats)
    if knobs.get("norm") == "batch":  # the running statistics moved, so this compared something
        assert float(jnp.abs(jit_state.batch_stats["stem_norm"]["mean"]).max()) > 0


def test_masked_evaluation_counts_only_real_examples():
    state = state_for("seed_cnn", MNIST)
    batch = batch_of(MNIST, 12)
    full = evaluate(state, {k: v[:7] for k, v in batch.items()})
    padded = dict(batch, mask=np.arange(12) < 7)
    masked = evaluate(state, padded)
    assert masked["count"] == 7
    assert masked["loss"] == pytest.approx(full["loss"], rel=1e-6)
    assert masked["accuracy"] == full["accuracy"]
    # Under pmap the sums over devices give the same numbers.
    p = metrics.summarize(train.pmap_eval_step()(train.replicate(state), train.shard(padded, 4)))
    assert p["count"] == 7 and p["loss"] == pytest.approx(full["loss"], rel=1e-5)


def test_batch_not_divisible_by_device_count_names_the_problem():
    with pytest.raises(ValueError, match=r"batch size 10 is not divisible by the device count 4"):
        train.shard(batch_of(MNIST, 10), 4)


def test_bad_input_shape_names_the_problem():
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        train.create_train_state(models.seed_cnn(), jax.random.key(0), (1, 28, 28, 1))


def test_per_layer_gradient_norms_name_every_layer():
    state = state_for("seed_resnet", MNIST)
    norms = metrics.layer_norms(state.params)
    assert "stage0_block4/conv1/kernel" in norms and "stem/kernel" in norms and "head/bias" in norms
    assert len(norms) == 2 * 12  # 11 convs + dense, kernel and bias each
