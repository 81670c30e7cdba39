"""The run config and studies: typed keys, checked values, identity, run names, study expansion."""
import json

import pytest

from jaxres import config, models
from jaxres.config import ConfigError, RunConfig


def test_defaults_are_the_seed_study():
    cfg = RunConfig()
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 1e-3)
    assert cfg.optimizer.settings() == {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    assert (cfg.data.batch_size, cfg.data.augment, cfg.schedule.name) == (128, False, "constant")
    assert models.build(cfg.model, 10).norm == "none"  # the seed networks' own: no normalization
    resnet = models.build(config.replace(cfg, "model.name", "resnet20").model, 10)
    assert (resnet.norm, resnet.kernel_init) == ("batch", "he_normal")  # He et al.'s, unless set
    assert models.build(config.replace(config.replace(cfg, "model.name", "resnet20"), "model.norm", "none").model,
                        10).norm == "none"


@pytest.mark.parametrize("key, text, value", [
    ("optimizer.lr", "0.1", 0.1), ("optimizer.lr", "1", 1.0), ("data.batch_size", "64", 64),
    ("data.augment", "true", True), ("data.augment", "off", False), ("data.train_subset", "none", None),
    ("data.train_subset", "3072", 3072), ("model.norm", "none", "none"), ("model.norm", "null", None), ("schedule.boundaries", "32000,48000", (32000, 48000)),
    ("schedule.boundaries", "[32000, 48000]", (32000, 48000)), ("model.kernel_init", "he_normal", "he_normal"),
    ("optimizer.nesterov", "yes", True), ("seed", "7", 7), ("model.name", "resnet20", "resnet20"),
])
def test_values_from_strings_take_the_fields_type(key, text, value):
    cfg = config.replace(RunConfig(), key, text)
    assert config.get(cfg, key) == value and type(config.get(cfg, key)) is type(value)


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.lrr", "0.1", r"unknown config key 'optimizer.lrr'; did you mean optimizer.lr\?"),
    ("lr", "0.1", r"unknown config key 'lr'"),
    ("optimizer.lr", "nan", r"optimizer.lr=nan must be a finite number"),
    ("optimizer.lr", "inf", r"optimizer.lr=inf must be a finite number"),
    ("optimizer.lr", "0", r"optimizer.lr=0.0 must be > 0"),
    ("optimizer.lr", "-1", r"optimizer.lr=-1.0 must be > 0"),
    ("optimizer.lr", "fast", r"optimizer.lr='fast' must be a number"),
    ("optimizer.name", "lamb", r"optimizer.name='lamb' is not one of adam, adamw, sgd"),
    ("optimizer.b2", "1", r"optimizer.b2=1.0 must be >= 0 and < 1"),
    ("epochs", "0", r"epochs=0 must be >= 1"), ("epochs", "-1", r"epochs=-1 must be >= 1"),
    ("epochs", "2.5", r"epochs=2.5 must be an integer"),
    ("seed", "-1", r"seed=-1 must be >= 0"), ("seed", "99999999999999999999", r"seed=99999999999999999999 must be"),
    ("data.batch_size", "0", r"data.batch_size=0 must be >= 1"),
    ("data.batch_size", "60001", r"data.batch_size=60001 is larger than the 60000 training examples of mnist"),
    ("data.test_subset", "-9700", r"data.test_subset=-9700 must be >= 1 and <= 10000"),
    ("data.train_subset", "0", r"data.train_subset=0 must be >= 1"),
    ("data.augment", "maybe", r"data.augment='maybe' must be true or false"),
    ("compute.overlap_grads", "maybe", r"compute.overlap_grads='maybe' is not one of true, false or auto"),
    ("data.name", "imagenet", r"data.name='imagenet' is not one of mnist, fashion_mnist, cifar10, cifar100"),
    ("model.name", "resnet21", r"model.name='resnet21' is not one of seed_cnn"),
    ("model.shortcut", "projection", r"model.shortcut does not apply to seed_cnn"),
    ("schedule.boundaries", "48000,32000", r"schedule.boundaries=\[48000, 32000\] must be increasing positive"),
    ("schedule.name", "piecewise", r"needs schedule.boundaries"),
])
def test_bad_keys_and_values_are_one_line_errors(key, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        config.replace(RunConfig(), key, value).check()  # checks across keys wait for .check()
    assert "\n" not in str(e.value)


def test_keys_can_be_set_in_any_order():
    """A check that involves two keys waits until the study is expanded, so the order of --set does not matter."""
    study = config.get_study("tiny").set("data.train_subset", 64).set("data.batch_size", 32)
    assert {r.data.batch_size for r in study.runs()} == {32}
    study = config.get_study("tiny").set("schedule.name", "piecewise").set("schedule.boundaries", "10,20")
    assert study.runs()[0].schedule.boundaries == (10, 20)
    with pytest.raises(ConfigError, match=r"data.batch_size=128 is larger than the 64 training examples"):
        config.get_study("tiny").set("data.train_subset", 64).runs()


def test_python_values_are_checked_too():
    with pytest.raises(ConfigError, match=r"optimizer.lr=True must be a number"):
        config.OptimizerConfig(lr=True)
    assert config.OptimizerConfig(lr=1).lr == 1.0 and isinstance(config.OptimizerConfig(lr=1).lr, float)
    assert RunConfig(data={"name": "mnist"}) == RunConfig()  # a section may be a dict: checked the same way
    with pytest.raises(ConfigError, match=r"data.batch_size=0 must be >= 1"):
        RunConfig(data={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"data must be a DataConfig, got 'mnist'"):
        RunConfig(data="mnist")
    assert config.from_dict({"data": {"name": "cifar10"}, "epochs": 3}) == RunConfig(data=config.DataConfig(name="cifar10"), epochs=3)
    with pytest.raises(ConfigError, match=r"data.name='imagenet' is not one of mnist"):
        config.from_dict({"data": {"name": "imagenet"}}).check()  # a tfds name: a catalog name on source device
    cfg = config.replace(RunConfig(), "optimizer.name", "sgd")
    assert config.from_dict(config.to_dict(cfg)) == cfg  # results.json's config is the run's config


def test_identity_leaves_out_the_epochs_unless_the_schedule_spans_the_run():
    a, b = RunConfig(epochs=3), RunConfig(epochs=30)
    assert config.identity(a) == config.identity(b) and config.run_name(a) == config.run_name(b)
    cos = config.replace(a, "schedule.name", "cosine")
    assert config.identity(cos) != config.identity(config.replace(cos, "epochs", 30))
    assert json.loads(json.dumps(config.to_dict(cos)))["schedule"]["boundaries"] == []


def test_run_names_are_readable_stable_and_unique():
    base = RunConfig()
    assert config.run_name(base) == "mnist_seed_cnn_seed0"
    assert config.run_name(config.replace(base, "seed", 3)) == "mnist_seed_cnn_seed3"
    names = {config.run_name(config.replace(base, k, v)) for k, v in [
        ("optimizer.lr", 0.01), ("optimizer.lr", 0.02), ("data.batch_size", 64), ("model.norm", "batch"),
        ("optimizer.name", "sgd"), ("schedule.warmup_steps", 5)]}
    assert len(names) == 6 and all(n.startswith("mnist_seed_cnn_seed0_") and len(n) == 29 for n in names)
    # the name depends on the config only: the same settings reached another way give the same name
    via_study = config.Study("s", "", base).set("optimizer.lr", "0.01").runs()[0]
    assert config.run_name(via_study) == config.run_name(config.replace(base, "optimizer.lr", 0.01))


def test_a_study_is_the_product_of_its_axes_with_per_dataset_epochs():
    quick = config.get_study("quick")
    runs = quick.runs()
    assert len(runs) == 6 and {r.epochs for r in runs} == {3}
    assert {(r.data.name, r.model.name) for r in runs} == {(d, m) for d in ("mnist", "cifar10")
                                                           for m in ("seed_cnn", "seed_resnet", "seed_plain_twin")}
    swept = quick.sweep("optimizer.lr", "0.001,0.01").sweep("seed", [0, 1, 2])
    assert len(swept.runs()) == 36 and len({config.run_name(r) for r in swept.runs()}) == 36
    seed = config.get_study("seed").runs()
    assert {(r.data.name, r.epochs) for r in seed} == {("mnist", 30), ("cifar10", 100)}
    assert len(seed) == 18 and {r.seed for r in seed} == {0, 1, 2}  # a comparison: three seeds per row
    assert {r.epochs for r in quick.set("epochs", 5).runs()} == {5}


def test_a_dataset_the_study_does_not_list_trains_for_its_own_epochs():
    """A newly registered dataset needs no --epochs: a per-dataset study falls back to the dataset's own count
    (jaxres.catalog), a study with one count for all uses it."""
    assert {r.epochs for r in config.get_study("seed").sweep("data.name", "fashion_mnist,cifar100").runs()} == {30, 100}
    assert {r.epochs for r in config.get_study("quick").sweep("data.name", "fashion_mnist").runs()} == {3}
    assert config.get_study("seed").sweep("data.name", "fashion_mnist").set("epochs", 2).runs()[0].epochs == 2


def test_sweep_values_are_checked_when_the_axis_is_made():
    with pytest.raises(ConfigError, match=r"optimizer.lr=-0.1 must be > 0"):
        config.get_study("tiny").sweep("optimizer.lr", "0.1,-0.1")
    with pytest.raises(ConfigError, match=r"unknown study 'fast'"):
        config.get_study("fast")


def test_every_key_round_trips_through_its_string_form():
    cfg = RunConfig()
    for key in config.keys():
        value = config.get(cfg, key)
        text = "null" if value is None else (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        if key == "schedule.boundaries":
            continue  # the empty list has no comma form; tested above
        assert config.get(config.replace(cfg, key, text), key) == value, key
    assert hash(cfg) == hash(RunConfig())


def test_layer_norm_recording_is_not_part_of_a_runs_identity():
    """Recording per-layer norms observes a run and changes no result: a run resumes, keeps its name and
    pools in the report whatever the recording interval."""
    base = config.RunConfig()
    other = config.replace(base, "layer_norms_every", "0")
    assert other.layer_norms_every == 0 and config.identity(other) == config.identity(base)
    assert config.run_name(other) == config.run_name(base)
    with pytest.raises(config.ConfigError, match="layer_norms_every"):
        config.replace(base, "layer_norms_every", "-1")


def test_a_tied_axis_moves_its_keys_together_and_set_unties_one():
    study = config.get_study("tiny").sweep("optimizer.name,optimizer.lr", "adam,0.001;sgd,0.1")
    got = {(r.data.name, r.model.name, r.optimizer.name, r.optimizer.lr) for r in study.runs()}
    assert len(got) == 2 * 3 * 2 and {(n, lr) for *_, n, lr in got} == {("adam", 0.001), ("sgd", 0.1)}
    same = config.get_study("tiny").sweep_tied(["optimizer.name", "optimizer.lr"], [["adam", 1e-3], ["sgd", 0.1]])
    assert [config.run_name(r) for r in same.runs()] == [config.run_name(r) for r in study.runs()]
    fixed_lr = study.set("optimizer.lr", 0.01)  # the other key stays an axis
    assert {(r.optimizer.name, r.optimizer.lr) for r in fixed_lr.runs()} == {("adam", 0.01), ("sgd", 0.01)}
    assert study.axis_keys()["optimizer.lr"] == [0.001, 0.1]


@pytest.mark.parametrize("keys, rows, message", [
    ("optimizer.name,optimizer.lr", "adam,0.001;sgd", "has 1 values for the 2 keys"),
    ("optimizer.name,optimizer.lr", "adam,-1", "optimizer.lr=-1"),
    ("optimizer.name,optimizer.lrr", "adam,0.1", "unknown config key 'optimizer.lrr'"),
    ("optimizer.lr,optimizer.lr", "0.1,0.1", "two or more different keys"),
])
def test_bad_tied_axes_are_one_config_error(keys, rows, message):
    with pytest.raises(config.ConfigError, match=message):
        config.get_study("tiny").sweep(keys, rows)


def test_depth_presets_follow_he_et_al():
    runs = config.get_study("depth").runs()
    assert len(runs) == 2 * 5 * 3  # plain/resnet x 20..110 x seeds 0, 1, 2
    r = runs[0]
    assert (r.data.name, r.data.preprocess, r.data.augment, r.data.batch_size) == ("cifar10", "standardize", True, 128)
    assert (r.optimizer.name, r.optimizer.lr, r.optimizer.settings()["momentum"], r.optimizer.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (r.schedule.name, r.schedule.boundaries, r.schedule.factor) == ("piecewise", (32000, 48000), 0.1)
    assert r.epochs * (50000 // 128) == 63960 and r.model.norm is None  # the presets' own: batch norm
    cpu = config.get_study("depth_cpu").runs()
    steps = cpu[0].epochs * cpu[0].data.train_subset // cpu[0].data.batch_size
    assert steps == 1000 and [b / steps for b in cpu[0].schedule.boundaries] == [32 / 64, 48 / 64]
    assert sorted(r.model.name for r in cpu) == sorted(f"{k}{d}" for k in ("plain", "resnet") for d in (20, 32, 56))


def test_norm_opt_preset_crosses_norms_and_optimizers_with_their_own_rates():
    runs = config.get_study("norm_opt").runs()
    assert len(runs) == 4 * 3 * 3 * 3
    combos = {(r.model.norm, r.optimizer.name, r.optimizer.lr, r.optimizer.weight_decay) for r in runs}
    assert {c[0] for c in combos} == {"none", "batch", "group", "layer"}
    assert {c[1:] for c in combos} == {("adam", 1e-3, 0.0), ("adamw", 1e-3, 0.01), ("sgd", 0.01, 0.0)}
    assert {r.optimizer.settings()["momentum"] for r in runs if r.optimizer.name == "sgd"} == {0.9}
