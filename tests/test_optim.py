"""Optimizers and schedules from the config: the schedule values, and the updates against torch.optim.

Reference: PyTorch's ``Adam`` / ``AdamW`` / ``SGD`` with ``MultiStepLR``, ``CosineAnnealingLR`` and
``LinearLR`` warm-up, fed the same gradients (fixed per step, independent of the parameters) from
the same starting parameters. Tolerance: float32 arithmetic in another order over 40 steps;
parameters agree to 1e-5 absolute (the updates are ~1e-3..1e-1 per step).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxres import config, optim, catalog


def run_config(**sections):
    parts = {"optimizer": config.OptimizerConfig(**sections.pop("optimizer", {})),
             "schedule": config.ScheduleConfig(**sections.pop("schedule", {}))}
    return config.RunConfig(**parts, **sections)


def lrs(cfg, steps, total=None):
    sched = optim.make_schedule(cfg.schedule, cfg.optimizer.lr, total)
    return np.array([float(sched(jnp.asarray(s))) for s in range(steps)])


def test_constant_piecewise_cosine_and_warmup_values():
    assert np.allclose(lrs(run_config(), 5), 1e-3)
    he = run_config(optimizer={"name": "sgd", "lr": 0.1},
                    schedule={"name": "piecewise", "boundaries": (32000, 48000), "factor": 0.1})
    sched = optim.make_schedule(he.schedule, he.optimizer.lr)
    got = [float(sched(s)) for s in (0, 31999, 32000, 47999, 48000, 63999)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    cos = lrs(run_config(optimizer={"lr": 1.0}, schedule={"name": "cosine", "final_fraction": 0.1}), 11, total=10)
    np.testing.assert_allclose(cos[[0, 5, 10]], [1.0, 0.55, 0.1], rtol=1e-6)
    warm = lrs(run_config(optimizer={"lr": 1.0}, schedule={"name": "piecewise", "boundaries": (6,),
                                                           "warmup_steps": 4}), 8)
    np.testing.assert_allclose(warm, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1], rtol=1e-6)  # boundaries absolute


def test_a_whole_run_cosine_needs_the_run_length():
    cfg = run_config(schedule={"name": "cosine"}, epochs=3)
    with pytest.raises(config.ConfigError, match="needs the run's total steps"):
        optim.make_optimizer(cfg)
    sched = optim.make_schedule(cfg.schedule, 1.0, 3 * 7)
    assert float(sched(21)) == pytest.approx(0.0, abs=1e-7) and float(sched(0)) == 1.0


def test_weight_decay_on_kernels_only_spares_biases_and_norms():
    params = {"conv0": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)}, "norm0": {"scale": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    for decay_on, moved in (("all", {"kernel", "bias", "scale"}), ("kernels", {"kernel"})):
        tx = optim.make_optimizer(run_config(optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0,
                                                        "weight_decay": 0.5, "decay_on": decay_on}))
        updates, _ = tx.update(zero, tx.init(params), params)
        flat = {path[-1].key: float(jnp.abs(u).max()) for path, u in jax.tree_util.tree_leaves_with_path(updates)}
        assert {k for k, v in flat.items() if v > 0} == moved


CASES = {
    "adam (the seed's)": ({}, {}),
    "adam + L2 + cosine": ({"weight_decay": 1e-2}, {"name": "cosine", "decay_steps": 40, "final_fraction": 0.1}),
    "adamw": ({"name": "adamw", "weight_decay": 1e-1}, {}),
    "sgd momentum, He et al.": ({"name": "sgd", "lr": 0.1, "weight_decay": 1e-4},
                                {"name": "piecewise", "boundaries": (15, 30), "warmup_steps": 5}),
    "sgd nesterov": ({"name": "sgd", "lr": 0.05, "nesterov": True, "weight_decay": 5e-4}, {}),
    "plain sgd": ({"name": "sgd", "lr": 0.05, "momentum": 0.0}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_updates_equal_torch_optim_on_the_same_gradients(case):
    torch = pytest.importorskip("torch")
    opt_kw, sched_kw = CASES[case]
    cfg = run_config(optimizer=opt_kw, schedule=sched_kw, epochs=1)
    o, s = cfg.optimizer, cfg.schedule
    os_ = o.settings()  # what the optimizer trains with: its own defaults and what the case set
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 7)).astype(np.float32)
    grads = rng.normal(size=(40, 5, 7)).astype(np.float32)

    tx = optim.make_optimizer(cfg)
    params, state = {"w": jnp.asarray(p0)}, None
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)

    w = torch.nn.Parameter(torch.tensor(p0))
    if o.name == "sgd":
        opt = torch.optim.SGD([w], lr=o.lr, momentum=os_["momentum"], nesterov=os_["nesterov"], weight_decay=os_["weight_decay"])
    else:
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        opt = cls([w], lr=o.lr, betas=(os_["b1"], os_["b2"]), eps=os_["eps"], weight_decay=os_["weight_decay"])
    scheds = []
    if s.warmup_steps:
        scheds.append(torch.optim.lr_scheduler.LinearLR(opt, 1 / s.warmup_steps, 1.0, s.warmup_steps - 1))
    if s.name == "piecewise":
        scheds.append(torch.optim.lr_scheduler.MultiStepLR(opt, list(s.boundaries), s.factor))
    if s.name == "cosine":
        scheds.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.decay_steps, o.lr * s.final_fraction))
    chain = torch.optim.lr_scheduler.ChainedScheduler(scheds) if scheds else None
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
        if chain:
            chain.step()
    np.testing.assert_allclose(np.asarray(params["w"]), w.detach().numpy(), rtol=0, atol=1e-5)
    assert not np.allclose(np.asarray(params["w"]), p0, atol=1e-3)  # the parameters moved: the check had teeth


def test_every_registered_optimizer_and_schedule_builds_and_takes_a_step():
    """Each name the config accepts has exactly one builder, and each optimizer moves the parameters."""
    assert set(config.OPTIMIZERS) == set(catalog.OPTIMIZERS) and set(config.SCHEDULES) == set(catalog.SCHEDULES)
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for name in config.OPTIMIZERS:
        for schedule in config.SCHEDULES:
            cfg = config.replace(config.replace(config.RunConfig(), "optimizer.name", name), "schedule.name", schedule)
            tx = optim.make_optimizer(cfg, steps_per_epoch=10)
            updates, _ = tx.update(grads, tx.init(params), params)
            moved = optax.apply_updates(params, updates)
            assert all(bool(jnp.all(m != p)) for m, p in zip(jax.tree.leaves(moved), jax.tree.leaves(params))), (name, schedule)


def test_a_name_without_a_builder_is_one_config_error_not_another_optimizer(monkeypatch):
    """A name registered (jaxres.catalog) but not given a builder fails loudly (it once trained SGD silently)."""
    monkeypatch.setitem(catalog.OPTIMIZERS, "lamb", catalog.Optimizer("lamb", "jaxres.optim:lamb", {"b1": 0.9, "b2": 0.95}))
    lamb = config.RunConfig(optimizer=config.OptimizerConfig.model_construct(name="lamb", lr=1e-3, decay_on="all"))
    assert lamb.optimizer.settings() == {"b1": 0.9, "b2": 0.95}  # its own defaults, not Adam's b2
    with pytest.raises(config.ConfigError, match="optimizer.name='lamb' has no builder .*no attribute 'lamb'"):
        optim.make_optimizer(lamb)
    linear = config.RunConfig(schedule=config.ScheduleConfig.model_construct(name="linear", warmup_steps=0))
    with pytest.raises(config.ConfigError, match="schedule.name='linear' has no builder .*unknown schedule"):
        optim.make_optimizer(linear)


def test_a_setting_the_optimizer_does_not_take_is_one_config_error():
    sgd = config.replace(config.replace(config.RunConfig(), "optimizer.name", "sgd"), "optimizer.b2", "0.99")
    with pytest.raises(config.ConfigError, match=r"optimizer.b2 does not apply to sgd \(it takes momentum, nesterov"):
        sgd.check()
    adam = config.replace(config.RunConfig(), "optimizer.momentum", "0.5")
    with pytest.raises(config.ConfigError, match="optimizer.momentum does not apply to adam"):
        optim.make_optimizer(adam)


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_lion_follows_its_update_rule(decay):
    """optimizer.name=lion against the paper's rule in NumPy on the same gradients, five steps:
    u = sign(b1 m + (1 - b1) g); p -= lr (u + decay p); m = b2 m + (1 - b2) g."""
    rng = np.random.default_rng(0)
    p0 = {"dense": {"kernel": rng.standard_normal((4, 3)), "bias": rng.standard_normal(3)}}
    grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape), p0) for _ in range(5)]
    cfg = config.replace(config.replace(config.replace(config.RunConfig(), "optimizer.name", "lion"),
                                        "optimizer.lr", 1e-2), "optimizer.weight_decay", decay)
    assert cfg.optimizer.settings() == {"b1": 0.9, "b2": 0.99, "weight_decay": decay}
    tx = optim.make_optimizer(cfg)
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p0)
    state = tx.init(params)
    ref = jax.tree.map(lambda v: v.astype(np.float64), p0)
    m = jax.tree.map(np.zeros_like, ref)
    for g in grads:
        updates, state = tx.update(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), g), state, params)
        params = optax.apply_updates(params, updates)
        u = jax.tree.map(lambda m_, g_: np.sign(0.9 * m_ + 0.1 * g_), m, g)
        ref = jax.tree.map(lambda p, u_: p - 1e-2 * (u_ + decay * p), ref, u)
        m = jax.tree.map(lambda m_, g_: 0.99 * m_ + 0.01 * g_, m, g)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("schedule", [{}, {"name": "cosine", "final_fraction": 0.1},
                                      {"name": "piecewise", "boundaries": (3,), "warmup_steps": 2}])
def test_the_logged_rates_are_the_rates_each_step_applied(schedule):
    """``rates`` (TensorBoard's step/learning_rate) against what plain SGD did on a gradient of ones, step by step
    from run step 0, over a whole-run cosine of 2 epochs of 4 steps; and from a later first step."""
    cfg = run_config(optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.0}, schedule=schedule, epochs=2)
    tx, params = optim.make_optimizer(cfg, steps_per_epoch=4), jnp.zeros(())
    opt_state, applied = tx.init(params), []
    for _ in range(8):
        updates, opt_state = tx.update(jnp.ones(()), opt_state, params)
        applied.append(-float(updates))
    schedule_of_run = optim.learning_rate(cfg, steps_per_epoch=4)
    np.testing.assert_allclose(optim.rates(schedule_of_run, 0, 8), applied, rtol=1e-6)
    np.testing.assert_allclose(optim.rates(schedule_of_run, 5, 3), applied[5:], rtol=1e-6)
    assert len(set(applied)) > 1 or not schedule  # the schedule moves where it should
