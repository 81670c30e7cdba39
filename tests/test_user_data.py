"""A user's own data (issue 48): arrays in one .npz (x_train, y_train, x_test, y_test) named by data.name; its image
shape, classes and sizes read from the data; each bad input one line naming the file and the fix, nothing written."""
import json

import numpy as np
import pytest

from experiments import compare


def _arrays(n_train=64, n_test=32, shape=(12, 12, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, *shape), dtype=np.uint8)
    y = np.arange(n_train + n_test) % classes
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def _argv(path, out, *extra):
    return ["--study", "tiny", "--datasets", str(path), "--models", "seed_cnn", "--out", str(out), "--no-progress",
            "--devices", "1", "--batch-size", "16", "--epochs", "1", "--train-subset", "64", "--test-subset", "32",
            *extra]


def test_arrays_in_an_npz_train_with_their_facts_read_from_the_data(tmp_path, capsys):
    path = tmp_path / "toy.npz"
    np.savez(path, **_arrays())
    out = tmp_path / "out"
    assert compare.main(_argv(path, out)) == 0
    (result,) = [json.loads(p.read_text()) for p in out.glob("toy_seed_cnn_seed0_*/results.json")]
    assert result["config"]["data"]["name"] == str(path)
    assert (result["final"]["train_examples"], result["final"]["test_examples"]) == (64, 32)
    assert result["model"]["num_classes"] == 4  # four classes in y_train: the head has four outputs
    assert (out / "curves_toy.png").is_file() and str(path) in (out / "summary.md").read_text()


def _truncated(path):
    np.savez(path, **_arrays())
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("damage, said", [
    (_truncated, "cannot read"),
    (lambda p: np.savez(p, **{k: v for k, v in _arrays().items() if k != "y_test"}), "has no y_test: save it with"),
    (lambda p: np.savez(p, **(_arrays() | {"x_train": _arrays()["x_train"] / 255.0})),
     "x_train is float64; give uint8 pixels 0..255"),
    (lambda p: np.savez(p, **(_arrays() | {"y_train": -_arrays()["y_train"]})), "y_train has label -3"),
    (lambda p: np.savez(p, **(_arrays() | {"y_test": _arrays()["y_test"] + 4})), "y_test has class 7, which y_train "
                                                                                  "lacks"),
    (lambda p: np.savez(p, **(_arrays() | {"y_train": _arrays()["y_train"][:10]})), "x_train has 64 images but y_train "
                                                                                    "has 10 labels"),
    (lambda p: np.savez(p, **(_arrays() | {"x_test": _arrays(shape=(8, 8, 3))["x_test"]})),
     "x_train's images are (12, 12, 3) and x_test's (8, 8, 3)"),
    (lambda p: np.savez(p, **_arrays(n_train=32)), "data.train_subset=64 must be >= 1 and <= 32"),
    (lambda p: None, "missing"),
])
def test_bad_arrays_are_one_line_naming_the_file_before_training(damage, said, tmp_path, capsys):
    path = tmp_path / "toy.npz"
    damage(path)
    out = tmp_path / "out"
    assert compare.main(_argv(path, out)) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err
    assert "toy.npz" in err or "train_subset" in err
    assert not out.exists()


def test_an_unknown_dataset_name_is_one_line_naming_both_doors(capsys):
    assert compare.main(["--study", "tiny", "--datasets", "imagenet", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.name='imagenet' is not one of mnist" in err and ".npz" in err and len(err.splitlines()) == 1
