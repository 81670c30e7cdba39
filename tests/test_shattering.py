"""experiments.shattering: the cosine of a network's input gradient along lines through test images (Balduzzi et
al. 2017), at initialization and trained, written for the depth report."""
import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import campaign, shattering

ROOT = Path(__file__).resolve().parents[1]


def _state(logit0):
    """A two-class "network" whose class-0 logit is ``logit0(x, a)`` per image (the other is 0)."""
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(1).normal(size=(4, 4, 3)), jnp.float32)
    return SimpleNamespace(params={"a": a}, batch_stats={},
                           apply_fn=lambda v, x, train: jnp.stack([logit0(x, v["params"]["a"]),
                                                                   jnp.zeros(len(x))], axis=1))


def test_a_linear_networks_gradient_keeps_its_direction_and_a_shattered_one_loses_it():
    """The cosines come from the gradient at the image and at each distance along one line: a linear logit's
    gradient has one direction everywhere (cosine 1 at every distance); sin(10^4 x)'s turns within about 1e-4 of the
    image's norm, so far out the cosine is noise around 0."""
    import jax.numpy as jnp

    images = np.random.default_rng(2).normal(size=(4, 4, 4, 3))
    labels = np.zeros(4, int)
    linear = shattering.cosines(_state(lambda x, a: jnp.sum(x * a, axis=(1, 2, 3))), images, labels)
    assert linear.shape == (4, len(shattering.DISTANCES))
    np.testing.assert_allclose(linear, 1.0, atol=1e-5)
    wavy = shattering.cosines(_state(lambda x, a: jnp.sum(jnp.sin(1e4 * x) * a, axis=(1, 2, 3))), images, labels)
    near, far = wavy[:, np.array(shattering.DISTANCES) <= 1e-7 * 10], wavy[:, np.array(shattering.DISTANCES) >= 1e-2]
    assert near.min() > 0.99 and abs(far.mean()) < 0.15 and far.std() < 0.35


def test_a_study_folders_runs_are_measured_once_at_initialization_kept_epochs_and_trained(tmp_path, raw_dir):
    """On a tiny run of 3 epochs that keeps epoch 1 (--keep-epochs) and 1 more: the rows of its states (images x
    distances each), cosines of at most 1 in size; run again, nothing is measured twice. An unfinished run (its
    results.json gone) has its initialization and kept epochs measured, never a "trained" state. Bad input is one
    line."""
    import shutil

    out = tmp_path / "runs"
    train = subprocess.run([sys.executable, "-m", "experiments.compare", "--study", "tiny", "--datasets", "cifar10",
                            "--models", "resnet20", "--raw-dir", str(raw_dir), "--out", str(out), "--no-report",
                            "--no-progress", "--set", "epochs=3", "--keep", "1", "--keep-epochs", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    run = next(out.glob("cifar10_resnet20_*"))
    assert {1, 3} <= set(campaign.saved_steps(run / "checkpoints"))  # epoch 1 kept though neither last nor (maybe) best
    probe = [sys.executable, "-m", "experiments.shattering", "--runs", str(out), "--raw-dir", str(raw_dir),
             "--images", "2", "--results", str(tmp_path / "results"), "--epochs", "1"]
    first = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("cosine at distance 1e-4 / 1e-2") == 3
    assert "not its step 0" not in first.stdout and "unchecked" not in first.stdout  # checked against the record
    with open(tmp_path / "results" / shattering.FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * len(shattering.DISTANCES)
    assert {(r["model"], r["state"]) for r in rows} == {("resnet20", s) for s in ("init", "epoch 1", "trained")}
    assert all(abs(float(r["cosine"])) <= 1.00001 for r in rows)
    assert min(float(r["cosine"]) for r in rows if float(r["distance"]) == 1e-6) > 0.99  # the same point, nearly
    trained = [r for r in rows if r["state"] == "trained"]
    assert [r["cosine"] for r in rows if r["state"] == "epoch 1"] != [r["cosine"] for r in trained]
    again = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "cosine at" not in again.stdout
    assert len((tmp_path / "results" / shattering.FILE).read_text().splitlines()) == len(rows) + 1

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished / run.name)
    (unfinished / run.name / "results.json").unlink()
    part = subprocess.run([sys.executable, "-m", "experiments.shattering", "--runs", str(unfinished), "--raw-dir",
                           str(raw_dir), "--images", "2", "--results", str(tmp_path / "part"), "--epochs", "1,3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert part.returncode == 0, part.stderr[-2000:]
    with open(tmp_path / "part" / shattering.FILE, newline="") as f:
        part_rows = list(csv.DictReader(f))
    assert {r["state"] for r in part_rows} == {"init", "epoch 1", "epoch 3"}
    same = lambda state, rs: [r["cosine"] for r in rs if r["state"] == state]  # noqa: E731
    assert same("epoch 3", part_rows) == same("trained", rows) and same("init", part_rows) == same("init", rows)

    # an initialization that is not the run's own step 0 (its recorded parameter norms differ) is not measured
    tampered = tmp_path / "tampered" / run.name
    shutil.copytree(unfinished / run.name, tampered)
    with np.load(tampered / "layer_norms.npz") as f:
        saved = dict(f)
    saved["param"][list(saved["steps"]).index(0), 1] *= 1.01
    np.savez(tampered / "layer_norms.npz", **saved)
    wrong = subprocess.run([sys.executable, "-m", "experiments.shattering", "--runs", str(tampered.parent),
                            "--raw-dir", str(raw_dir), "--images", "2", "--results", str(tmp_path / "wrong")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 0 and "its rebuilt initialization is not its step 0 (layer " in wrong.stdout
    assert "cosine at" not in wrong.stdout and not (tmp_path / "wrong" / shattering.FILE).exists()

    for argv, message in ((["--runs", str(tmp_path / "nowhere")], "is not a folder"),
                          (["--runs", str(out), "--images", "0"], "--images 0: give 1 or more"),
                          (["--runs", str(out), "--models", "plain56"], "no run in")):
        bad = subprocess.run([sys.executable, "-m", "experiments.shattering", *argv], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    bad = subprocess.run([sys.executable, "-m", "experiments.shattering", "--runs", str(out), "--epochs", "0,1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "give epochs from 1" in bad.stderr, bad.stderr


def test_the_committed_depth_runs_initialization_is_rebuilt_from_their_seed():
    """The probe's "init" state is rebuilt from a run's config and seed, not read from the run: for every committed
    depth run, its per-layer parameter norms equal those the run recorded at its step 0 (layer_norms.npz)."""
    import json

    import jaxres
    from jaxres import config, models, optim, train

    runs = sorted((ROOT / "results" / "depth_full_cpu").glob("*/layer_norms.npz"))
    if not runs:
        pytest.skip("no committed depth run")
    for path in runs:
        r = json.loads((path.parent / "results.json").read_text())
        cfg = config.from_dict(r["config"])
        jaxres.setup(cfg.compute)
        model = models.from_config(cfg, 10)
        state = train.create_train_state(model, train.Streams.from_seed(cfg.seed).init, (32, 32, 3),
                                         optim.make_optimizer(cfg, 390))
        assert shattering._not_step0(path.parent, state) is None, path.parent.name
