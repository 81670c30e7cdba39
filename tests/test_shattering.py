"""experiments.shattering: the cosine of a network's input gradient along lines through test images (Balduzzi et
al. 2017), at initialization and trained, written for the depth report."""
import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from experiments import shattering

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


def test_a_study_folders_runs_are_measured_once_at_initialization_and_trained(tmp_path, raw_dir):
    """On a tiny trained run: the rows of both states (images x distances each), cosines of at most 1 in size;
    run again, nothing is measured twice; bad input is one line."""
    out = tmp_path / "runs"
    train = subprocess.run([sys.executable, "-m", "experiments.compare", "--study", "tiny", "--datasets", "cifar10",
                            "--models", "resnet20", "--raw-dir", str(raw_dir), "--out", str(out), "--no-report",
                            "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    probe = [sys.executable, "-m", "experiments.shattering", "--runs", str(out), "--raw-dir", str(raw_dir),
             "--images", "2", "--results", str(tmp_path / "results")]
    first = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("cosine at distance 1e-4 / 1e-2") == 2
    with open(tmp_path / "results" / shattering.FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * len(shattering.DISTANCES)
    assert {(r["model"], r["state"]) for r in rows} == {("resnet20", "init"), ("resnet20", "trained")}
    assert all(abs(float(r["cosine"])) <= 1.00001 for r in rows)
    assert min(float(r["cosine"]) for r in rows if float(r["distance"]) == 1e-6) > 0.99  # the same point, nearly
    again = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "cosine at" not in again.stdout
    assert len((tmp_path / "results" / shattering.FILE).read_text().splitlines()) == len(rows) + 1
    for argv, message in ((["--runs", str(tmp_path / "nowhere")], "is not a folder"),
                          (["--runs", str(out), "--images", "0"], "--images 0: give 1 or more"),
                          (["--runs", str(out), "--models", "plain56"], "no finished run in")):
        bad = subprocess.run([sys.executable, "-m", "experiments.shattering", *argv], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
