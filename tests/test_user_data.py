"""A user's own data (issue 48): arrays in one .npz (x_train, y_train, x_test, y_test) named by data.name; its image
shape, classes and sizes read from the data; each bad input one line naming the file and the fix, nothing written."""
import json
from pathlib import Path

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


def _refused(argv, said, capsys) -> str:
    """The command is refused in one line saying ``said``, exit 2, and its --out is never made; that line."""
    assert compare.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err
    assert not Path(argv[argv.index("--out") + 1]).exists()
    return err


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
    err = _refused(_argv(path, tmp_path / "out"), said, capsys)
    assert "toy.npz" in err or "train_subset" in err


def test_an_unknown_dataset_name_is_one_line_naming_both_doors(capsys):
    assert compare.main(["--study", "tiny", "--datasets", "imagenet", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.name='imagenet' is not one of mnist" in err and ".npz" in err and len(err.splitlines()) == 1


def _folder(root, size=(10, 10), mode="RGB", classes=("cat", "dog", "fox"), n=(4, 2)):
    """DIR/train/<class>/*.png and DIR/test/<class>/*.png, the layout of Keras's image_dataset_from_directory."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), n):
        for c in classes:
            for i in range(count):
                (root / split / c).mkdir(parents=True, exist_ok=True)
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / c / f"{i}.png")
    return root


def _folder_argv(root, out):
    return ["--study", "tiny", "--datasets", str(root), "--models", "seed_cnn", "--out", str(out), "--no-progress",
            "--devices", "1", "--batch-size", "4", "--epochs", "1", "--train-subset", "12", "--test-subset", "6"]


def test_a_folder_of_images_by_class_trains_and_is_read_once_into_a_checked_cache(tmp_path, monkeypatch):
    from jaxres.data import folders, formats

    root = _folder(tmp_path / "pets")
    out = tmp_path / "out"
    assert compare.main(_folder_argv(root, out)) == 0
    (result,) = [json.loads(p.read_text()) for p in out.glob("pets_seed_cnn_seed0_*/results.json")]
    assert result["model"]["num_classes"] == 3 and result["final"]["test_examples"] == 6
    (cache,) = (root / ".jaxres_cache").glob("*.npz")
    folders._arrays.cache_clear()
    monkeypatch.setattr(folders, "_read", lambda *a: pytest.fail("read the images again"))
    assert formats.info(str(root)).shape == (10, 10, 3)  # the facts, from the cache
    x, y = folders.folder_arrays(root)["train"]
    assert x.shape == (12, 10, 10, 3) and sorted(set(y.tolist())) == [0, 1, 2]
    monkeypatch.undo()
    # a training image changed: the cache no longer matches the folder, so it is read again into a new one
    (root / "train" / "cat" / "0.png").write_bytes((root / "train" / "dog" / "1.png").read_bytes())
    read = []
    real = folders._read
    monkeypatch.setattr(folders, "_read", lambda *a: read.append(1) or real(*a))
    folders._arrays.cache_clear()
    folders.folder_arrays(root)
    (new,) = (root / ".jaxres_cache").glob("*.npz")  # the stale cache is gone
    assert read == [1] and new != cache


def test_a_grayscale_folder_keeps_one_channel(tmp_path):
    from jaxres.data import folders

    root = _folder(tmp_path / "digits", mode="L")
    assert folders.folder_arrays(root)["train"][0].shape == (12, 10, 10, 1)


def _not_an_image(root):
    _folder(root)
    (root / "train" / "dog" / "notes.txt").write_text("not a picture")


def _mixed_sizes(root):
    from PIL import Image

    _folder(root)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "train" / "fox" / "big.png")


@pytest.mark.parametrize("make, said", [
    (lambda r: _folder(r) and __import__("shutil").rmtree(r / "test"), "has no test/ folder"),
    (lambda r: _folder(r) and (r / "train" / "emu").mkdir(), "emu is empty: every class needs images"),
    (lambda r: _folder(r) and _folder(r, classes=("emu",), n=(0, 1)), "has class folder(s) emu that"),
    (_not_an_image, "notes.txt is not an image Pillow can read"),
    (_mixed_sizes, "big.png is 12x12 but"),
])
def test_a_bad_image_folder_is_one_line_naming_it_before_training(make, said, tmp_path, capsys):
    root = tmp_path / "pets"
    make(root)
    _refused(_folder_argv(root, tmp_path / "out"), said, capsys)
