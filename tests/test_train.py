"""Train and eval steps: learning, jit vs pmap equivalence, masked evaluation, bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxres import checkpoint, config, cpu, data, metrics, models, optim, results, train

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


@pytest.mark.parametrize("name", ["seed_cnn", pytest.param("seed_resnet", marks=pytest.mark.slow)])
def test_a_few_dozen_steps_overfit_a_small_batch(name):
    state = state_for(name, MNIST)
    batch = batch_of(MNIST, 16, seed=1)  # random labels: only memorisation fits them
    step = train.jit_train_step()
    for i in range(40):
        state, _ = step(state, batch, jax.random.key(i))
    result = evaluate(state, batch)
    assert result["accuracy"] == 1.0 and result["loss"] < 0.1, result


def test_pmap_on_4_devices_equals_jit_on_one_with_the_same_global_batch():
    """seed_cnn with Adam, 3 steps run freely on both paths. Tolerance: float32 reductions run in a
    different order (per-device partial sums), and Adam divides by sqrt(v), which magnifies those
    rounding differences for gradient entries near zero (an entry whose gradient is noise moves by up to a
    whole step, lr, either way); so no parameter is apart by more than three steps, at most 0.1% are apart
    by more than a tenth of a step (measured on an AVX2 CPU: 11 of 18,432 in one kernel, up to 5.6e-4; on
    an AVX-512 one none), and the mean absolute difference is below 1e-7."""
    assert jax.local_device_count() == 4, "tests/conftest.py simulates 4 CPU devices"
    state = state_for("seed_cnn", CIFAR)
    batches = [batch_of(CIFAR, 16, seed=s) for s in range(3)]
    jit_state, jit_step = state, train.jit_train_step(donate=False)
    p_state, p_step = train.replicate(state), train.pmap_train_step(donate=False)
    for i, b in enumerate(batches):
        jit_state, jm = jit_step(jit_state, b, jax.random.key(i))
        p_state, pm = p_step(p_state, data.shard(b, 4), jax.random.key(i))
        jm, pm = metrics.summarize(jm), metrics.summarize(pm)
        assert jm["count"] == pm["count"] == 16 and jm["accuracy"] == pm["accuracy"]
        assert jm["loss"] == pytest.approx(pm["loss"], rel=1e-5)
    p_state = train.unreplicate(p_state)
    assert int(p_state.step) == 3
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), jit_state.params,
                                         p_state.params))
    n = sum(d.size for d in diffs)
    assert max(float(d.max()) for d in diffs) < 3 * 1e-3  # no entry apart by more than 3 Adam steps of lr 1e-3
    assert sum(int((d > 1e-4).sum()) for d in diffs) <= n // 1000  # nearly all within a tenth of a step
    assert float(sum(d.sum() for d in diffs) / n) < 1e-7


def test_pmap_batch_norm_step_equals_jit_from_the_same_state():
    """A small CIFAR ResNet (two stages of one block, a stride-2 stage entry) with batch norm and SGD
    momentum: each of 3 steps starts both paths from the same
    (jit) state, so the step itself is compared, not the chaos of training dynamics. Tolerance: batch
    norm's gradients are sums with heavy cancellation (a float64 reference shows float32 errors up
    to ~1e-3 of a leaf's largest entry, on either path), and free-running steps at lr 0.1 amplify them;
    from the same state, updates agree to 5% of each leaf's largest update, their mean absolute
    difference is below 1% of the mean update, and losses, accuracies, gradient norms and batch
    statistics agree to float32 noise. Averaging nothing (per-device gradients or statistics) fails
    all of these by orders of magnitude."""
    model = models.ResNet(stage_sizes=(1, 1), widths=(16, 32), norm="batch", kernel_init="he_normal")
    state = train.create_train_state(model, jax.random.key(0), CIFAR, optax.sgd(0.1, momentum=0.9))
    jit_step, p_step = train.jit_train_step(donate=False), train.pmap_train_step(donate=False)
    for i in range(3):
        b = batch_of(CIFAR, 16, seed=i)
        new, jm = jit_step(state, b, jax.random.key(i))
        p_new, pm = p_step(train.replicate(state), data.shard(b, 4), jax.random.key(i))
        p_new = train.unreplicate(p_new)
        assert float(jm["loss_sum"]) == pytest.approx(float(pm["loss_sum"][0]), rel=1e-5)
        assert float(jm["correct"]) == float(pm["correct"][0])
        assert float(jm["grad_norm"]) == pytest.approx(float(pm["grad_norm"][0]), rel=1e-4)
        for (path, a), b_, old in zip(jax.tree_util.tree_leaves_with_path(new.params), jax.tree.leaves(p_new.params),
                                      jax.tree.leaves(state.params)):
            update, diff = np.abs(np.asarray(a - old)), np.abs(np.asarray(a - b_))
            assert diff.max() <= 0.05 * update.max() and diff.mean() <= 1e-2 * update.mean() + 1e-9, \
                (i, jax.tree_util.keystr(path), diff.max(), update.max())
        close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        jax.tree_util.tree_map(close, new.batch_stats, p_new.batch_stats)
        assert float(jnp.abs(new.batch_stats["stem_norm"]["mean"]).max()) > 0  # the statistics moved
        state = new


@pytest.mark.parametrize("norm", ["none", pytest.param("batch", marks=pytest.mark.slow)])
def test_sharded_jit_on_4_devices_equals_pmap_on_4(norm):
    """The sharded-jit path (one program over a 4-device mesh, shard_map inside) and pmap run the same
    per-device step and the same collectives: parameters, batch statistics and metrics agree to
    float32 rounding (atol 1e-6) over 3 free-running Adam steps."""
    model = (models.seed_cnn() if norm == "none"
             else models.ResNet(stage_sizes=(1, 1), widths=(16, 32), norm="batch", kernel_init="he_normal"))
    state = train.create_train_state(model, jax.random.key(0), CIFAR, optax.adam(1e-3))
    mesh = train.make_mesh(jax.local_devices())
    s_state, s_step = train.place(state, mesh), train.sharded_train_step(mesh, donate=False, layer_norms_every=1)
    p_state, p_step = train.replicate(state), train.pmap_train_step(donate=False, layer_norms_every=1)
    for i in range(3):
        b = batch_of(CIFAR, 16, seed=i)
        s_batch = jax.device_put(b, train.batch_sharding(mesh))
        s_state, sm = s_step(s_state, s_batch, jax.random.key(i))
        p_state, pm = p_step(p_state, data.shard(b, 4), jax.random.key(i))
        assert s_batch["image"].sharding.shard_shape(s_batch["image"].shape)[0] == 4  # split, not copied
        for k in ("loss_sum", "correct", "count", "grad_norm", "layer_norms"):
            np.testing.assert_allclose(np.asarray(sm[k]), np.asarray(pm[k])[0], rtol=1e-6, atol=1e-6, err_msg=k)
    p_state = train.unreplicate(p_state)
    assert s_state.params["head"]["kernel"].sharding.is_fully_replicated
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    jax.tree_util.tree_map(close, s_state.params, p_state.params)
    jax.tree_util.tree_map(close, s_state.batch_stats, p_state.batch_stats)


@pytest.mark.slow  # a whole fit on both paths; make test checks their steps equal (test_sharded_jit_on_4_devices_equals_pmap_on_4)
def test_fit_on_4_devices_gives_the_same_run_on_both_paths(raw_dir):
    cfg = config.DataConfig(name="cifar10", batch_size=64, eval_batch_size=100, train_subset=256, augment=True)
    runs = {}
    for parallel in ("jit", "pmap"):
        ds = data.make_dataset(cfg, raw_dir=raw_dir, n_devices=4)
        state = train.create_train_state(models.seed_resnet(), jax.random.key(0), ds.shape)
        runs[parallel] = train.fit(state, ds, 2, train.Streams.from_seed(0), progress=False, log=lambda s: None,
                                   parallel=parallel)
        assert ds.sharding is None  # fit hands the dataset back as it found it
    a, b = runs["jit"], runs["pmap"]
    for ra, rb in zip(a.history, b.history):
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    close = lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    jax.tree_util.tree_map(close, a.state.params, b.state.params)
    with pytest.raises(ValueError, match="parallel='gspmd' is not one of jit, pmap"):
        train.fit(a.state, data.make_dataset(cfg, raw_dir=raw_dir), 3, train.Streams.from_seed(0), parallel="gspmd")


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
    p = metrics.summarize(train.pmap_eval_step()(train.replicate(state), data.shard(padded, 4)))
    assert p["count"] == 7 and p["loss"] == pytest.approx(full["loss"], rel=1e-5)


def test_batch_not_divisible_by_device_count_names_the_problem():
    with pytest.raises(ValueError, match=r"batch size 10 is not divisible by the device count 4"):
        data.shard(batch_of(MNIST, 10), 4)


def test_bad_input_shape_names_the_problem():
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        train.create_train_state(models.seed_cnn(), jax.random.key(0), (1, 28, 28, 1))


def test_recorded_norms_cover_every_layer():
    state = state_for("seed_resnet", MNIST)
    _, m = train.jit_train_step(donate=False, layer_norms_every=1)(state, batch_of(MNIST, 8), jax.random.key(0))
    assert "stage0_block4/conv1" in state.layers and "stem" in state.layers and "head" in state.layers
    assert len(state.layers) == 12 and np.asarray(m["layer_norms"]).shape == (3, 12)  # 11 convs + dense
    assert (np.asarray(m["layer_norms"])[1] > 0).all()  # every layer's parameters (kernel and bias) counted


# ------------------------------------------------------------------ per-layer monitoring
def test_layers_are_named_in_network_order():
    assert state_for("seed_cnn", MNIST).layers == ("conv0", "conv1", "conv2", "conv3", "conv4", "head")
    model = models.get_model("resnet20")  # abstract parameters: no compilation
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *CIFAR)))["params"]
    layers = train.layer_names(model, params, CIFAR)
    assert layers[:4] == ("stem", "stem_norm", "stage0_block0/conv0", "stage0_block0/norm0")
    assert layers.index("stage1_block0/conv0") < layers.index("stage2_block0/conv0") and layers[-1] == "head"
    assert len(layers) == 1 + 1 + 9 * 4 + 1  # stem + its norm, 9 blocks of two convs and two norms, head


def _norms(tree, layers):
    out = []
    for name in layers:
        node = tree
        for part in name.split("/"):
            node = node[part]
        out.append(float(np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64))) for v in node.values()))))
    return np.array(out)


@pytest.mark.parametrize("name, shape", [("seed_resnet", MNIST),
                                         pytest.param("small_bn_resnet", (16, 16, 3), marks=pytest.mark.slow)])
def test_layer_norms_equal_a_separate_gradient_on_the_same_batch(name, shape):
    """Gradient, parameter and update norms from inside the compiled step (every 2nd step) against
    jax.grad, the parameters and new - old parameters computed separately; float32, rtol 1e-5. The
    second network has batch norm (norm layers, batch statistics) and a stride-2 stage."""
    if name == "small_bn_resnet":
        model = models.ResNet(stage_sizes=(1, 1), widths=(8, 16), stem_width=8, norm="batch")
        state = train.create_train_state(model, jax.random.key(0), shape)
    else:
        state = state_for(name, shape)
    batch = batch_of(shape, 8)
    step = train.jit_train_step(donate=False, layer_norms_every=2)

    @jax.jit  # compiled once, for every recorded step
    @jax.grad
    def grad_of(p, stats):
        out = state.apply_fn({"params": p, "batch_stats": stats} if stats else {"params": p}, batch["image"],
                             train=True, mutable=["batch_stats"] if stats else False)
        logits = out[0] if stats else out
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    for i in range(3):
        new, m = step(state, batch, jax.random.key(i))
        assert int(m["layer_norms_step"]) == i and int(m["layer_norms_recorded"]) == (i % 2 == 0)
        if i % 2 == 0:
            grads = grad_of(state.params, state.batch_stats)
            update = jax.tree.map(jnp.subtract, new.params, state.params)
            for row, tree in zip(m["layer_norms"], (grads, state.params, update)):
                np.testing.assert_allclose(np.asarray(row), _norms(tree, state.layers), rtol=1e-5)
        else:
            assert not np.asarray(m["layer_norms"]).any()  # skipped: nothing computed
        state = new


def test_layer_norms_under_pmap_equal_jit():
    state, batch = state_for("seed_cnn", MNIST), batch_of(MNIST, 16)
    _, jm = train.jit_train_step(donate=False, layer_norms_every=1)(state, batch, jax.random.key(0))
    _, pm = train.pmap_train_step(donate=False, layer_norms_every=1)(train.replicate(state), data.shard(batch, 4),
                                                                     jax.random.key(0))
    np.testing.assert_allclose(np.asarray(pm["layer_norms"])[0], np.asarray(jm["layer_norms"]), rtol=1e-4)


def test_shortcuts_keep_the_first_layers_gradient_alive_during_training():
    """The seed study's claim, on the recorded series: without normalization and with the seed's Glorot
    init (He init without normalization makes the residual stack explode instead), the first
    convolution's gradient norm of resnet56 is more than 1,000x plain56's at initialisation (step 0)
    and stays more than 100x over the first 6 Adam steps. 8x8 images: the effect is one of depth."""
    x = batch_of((8, 8, 3), 4)
    series = {}
    for name in ("resnet56", "plain56"):
        model = models.get_model(name, norm="none", kernel_init="glorot_uniform")
        state = train.create_train_state(model, jax.random.key(0), (8, 8, 3))
        step = train.jit_train_step(layer_norms_every=1)
        got = []
        for i in range(6):
            state, m = step(state, x, jax.random.key(i))
            got.append(m)
        series[name] = train._layer_norms(got)
        assert state.layers[0] == "stem" and list(series[name].steps) == list(range(6))
    first_res, first_plain = series["resnet56"].grad[:, 0], series["plain56"].grad[:, 0]
    print("first-conv gradient norms, resnet56:", first_res, "plain56:", first_plain)
    ratio = first_res / np.maximum(first_plain, 1e-30)
    assert (first_res > 1e-3).all() and ratio[0] > 1e3 and (ratio > 100).all()


def test_a_resumed_epoch_replaces_its_stale_layer_norms(tmp_path):
    """An epoch recorded but not checkpointed before a kill is trained and recorded again after the
    resume: its old rows are replaced, not duplicated."""
    path, names = tmp_path / results.LAYER_FILE, ("a", "b")
    rows = lambda steps: train.LayerNorms(np.array(steps), *(np.full((len(steps), 2), float(s)) for s in (1, 2, 3)))
    results.append_layer_norms(path, names, rows([0, 10]))
    results.append_layer_norms(path, names, rows([20, 30]))  # epoch 2, then killed before its checkpoint
    results.append_layer_norms(path, names, rows([20, 30]))  # epoch 2 again after the resume
    got_names, got = results.load_layer_norms(path)
    assert got_names == list(names) and list(got["steps"]) == [0, 10, 20, 30] and got["grad"].shape == (4, 2)
    assert results.load_layer_norms(tmp_path / "missing.npz") is None


# ------------------------------------------------------------------ random streams
def test_streams_never_share_a_key():
    """init, step, augmentation and order come from one root key and never coincide: in particular the
    augmentation key of epoch e+1 is not the step key of any step (it was, before the streams)."""
    s = train.Streams.from_seed(0)
    keys = {"init": s.init, "order": s.order}
    for k in range(40):
        keys[f"step {k}"] = jax.random.fold_in(s.step, k)  # what train_step folds in: the state's step
    for e in range(4):
        epoch = jax.random.fold_in(s.augment, e)
        keys[f"augment epoch {e}"] = epoch
        for k in range(10):
            keys[f"augment {e}/{k}"] = jax.random.fold_in(epoch, k)
    raw = {name: tuple(np.asarray(jax.random.key_data(k)).tolist()) for name, k in keys.items()}
    assert len(set(raw.values())) == len(raw)
    assert train.Streams.from_seed(0).order_seed == s.order_seed != train.Streams.from_seed(1).order_seed


def test_the_step_key_depends_on_the_step():
    """A stochastic layer sees a different key at every step although fit passes the same stream key."""
    class Noisy(nn.Module):
        @nn.compact
        def __call__(self, x, train=False, axis_name=None):
            x = nn.Dropout(0.5, deterministic=not train)(x.reshape((x.shape[0], -1)))
            return nn.Dense(10)(x)

    state = train.create_train_state(Noisy(), jax.random.key(0), (4, 4, 1), optax.sgd(0.0))
    batch = batch_of((4, 4, 1), 8)
    step = train.jit_train_step(donate=False)
    _, m1 = step(state, batch, jax.random.key(1))
    state2 = state.replace(step=state.step + 1)
    _, m2 = step(state2, batch, jax.random.key(1))
    assert float(m1["loss_sum"]) != float(m2["loss_sum"])


# ------------------------------------------------------------------ divergence
def test_a_non_finite_step_is_reported_by_the_step_itself():
    state = state_for("seed_cnn", MNIST)
    state = state.replace(params=jax.tree.map(lambda p: p * jnp.inf, state.params))
    _, m = train.jit_train_step(donate=False)(state, batch_of(MNIST, 8), jax.random.key(0))
    assert float(m["nonfinite_steps"]) == 1.0 and int(m["first_nonfinite_step"]) == 1
    _, ok = train.jit_train_step(donate=False)(state_for("seed_cnn", MNIST), batch_of(MNIST, 8), jax.random.key(0))
    assert float(ok["nonfinite_steps"]) == 0.0 and int(ok["first_nonfinite_step"]) == train.NO_STEP


def test_fit_stops_a_diverging_run_and_never_checkpoints_it(raw_dir, tmp_path):
    cfg = config.RunConfig(data=config.DataConfig(batch_size=32, train_subset=128, test_subset=64),
                           optimizer=config.OptimizerConfig(name="sgd", lr=1e30, momentum=0.0), epochs=3)
    ds = data.make_dataset(cfg.data, raw_dir=raw_dir)
    state = train.create_train_state(models.seed_cnn(widths=(8,)), jax.random.key(0), ds.shape,
                                     optim.make_optimizer(cfg))
    with checkpoint.Checkpointer(tmp_path, {"x": 1}) as ckpt:
        fit = train.fit(state, ds, 3, train.Streams.from_seed(0), checkpointer=ckpt, progress=False,
                        log=lambda s: None)
        assert ckpt.epochs() == []  # the diverged epoch is not checkpointed
    assert fit.diverged is not None and fit.diverged["epoch"] == 1 and 1 <= fit.diverged["step"] <= 4
    assert len(fit.history) == 1 and fit.history[0]["diverged"] and fit.history[0]["test_accuracy"] is None
    assert fit.history[0]["machine"] == cpu.kind()  # what the epoch ran on, beside its time


def test_each_epochs_row_names_the_machine_it_ran_on():
    """A CPU's model and instruction sets; an accelerator's device kind (a run resumed elsewhere has both)."""
    assert cpu.machine("NVIDIA H200", "gpu") == "NVIDIA H200"
    assert cpu.machine("cpu", "cpu") == cpu.kind() == cpu.kind(cpu.host())
    assert cpu.kind({"model": "AMD EPYC", "isa": ["avx2", "avx512f"]}) == "AMD EPYC (avx2, avx512f)"
    assert cpu.kind({"model": "Old", "isa": []}) == "Old (no AVX2)"
    assert cpu.kind({"model": "AMD EPYC", "family": "family 26 model 2", "isa": ["avx2"]}) == \
        "AMD EPYC, family 26 model 2 (avx2)"  # generations a hypervisor names alike
    assert cpu.host()["family"] is None or cpu.host()["family"].startswith("family ")
    from jaxres.report.runs import ran_on  # the report words an unrecorded run's last CPU the same way
    assert ran_on({"history": [{}], "environment": {"backend": "cpu", "cpu": cpu.host()}}) == \
        f"1 epoch unrecorded (the run ended on {cpu.kind()})"


def test_an_epoch_without_a_recorded_step_adds_nothing(tmp_path):
    state = state_for("seed_cnn", MNIST)
    step = train.jit_train_step(layer_norms_every=100)
    state, m0 = step(state, batch_of(MNIST, 8), jax.random.key(0))  # step 0: recorded
    state, m1 = step(state, batch_of(MNIST, 8), jax.random.key(1))  # step 1: not
    empty = train._layer_norms([m1])
    assert empty.steps.size == 0 and empty.grad.shape == (0, 6)
    path = tmp_path / results.LAYER_FILE
    results.append_layer_norms(path, state.layers, train._layer_norms([m0]))
    results.append_layer_norms(path, state.layers, empty)
    assert list(results.load_layer_norms(path)[1]["steps"]) == [0]


class _FiveBatches:
    """A batch source of five fixed MNIST-shaped batches an epoch."""
    steps_per_epoch = 5

    def __init__(self):
        self.batches = [batch_of(MNIST, 8, seed=i) for i in range(5)]

    def train_batches(self, epoch, rng=None, start=0):
        return iter(self.batches[start:])


def test_each_steps_loss_reaches_on_steps_after_each_save_and_at_the_epoch_end():
    ds, step, streams = _FiveBatches(), train.jit_train_step(donate=False), train.Streams.from_seed(0)
    state0 = state_for("seed_cnn", MNIST)
    calls = []
    on_steps = lambda first, losses: calls.append((first, np.asarray(losses)))
    save_after_2 = lambda done, more, stop: (done == 2, None)
    _, m, _ = train.train_epoch(state0, step, ds, 1, streams, progress=False, save=lambda *a: None,
                                agree=save_after_2, on_steps=on_steps)
    assert [(first, len(v)) for first, v in calls] == [(5, 2), (7, 3)]  # run steps 5-9: epoch 1 of 5 steps
    losses = np.concatenate([v for _, v in calls])
    assert losses.mean() == pytest.approx(m["loss"], rel=1e-6)  # equal batches: the epoch's loss is their mean
    _, m0 = step(state0, ds.batches[0], streams.step)  # the first value is that step's mean loss on its batch
    assert losses[0] == pytest.approx(float(m0["loss_sum"]) / 8, rel=1e-6)
    calls.clear()  # resumed after step 2 of the epoch: the numbering goes on from run step 7
    train.train_epoch(state0, step, ds, 1, streams, progress=False, start=2, on_steps=on_steps)
    assert [(first, len(v)) for first, v in calls] == [(7, 3)]
    calls.clear()
    train.train_epoch(state0, step, ds, 0, streams, progress=False)  # without on_steps nothing is kept or called
    assert calls == []
