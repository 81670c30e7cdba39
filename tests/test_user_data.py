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


def test_a_folder_of_mixed_sizes_trains_resized_to_the_size_the_config_names(tmp_path):
    from jaxres import config, data
    from jaxres.data import folders

    root = tmp_path / "pets"
    _mixed_sizes(root)
    out = tmp_path / "out"
    assert compare.main(_folder_argv(root, out) + ["--image-size", "8"]) == 0
    (result,) = [json.loads(p.read_text()) for p in out.glob("pets_seed_cnn_seed0_*/results.json")]
    assert result["config"]["data"]["image_size"] == [8, 8] and result["data_facts"]["shape"] == [8, 8, 3]
    # from Python, another size: its own cache beside the first; the images are Pillow's bilinear resize
    import jaxres

    cfg = config.DataConfig(name=str(root), image_size=(6, 5), batch_size=4, eval_batch_size=4)
    res = jaxres.run(config.RunConfig(data=cfg, epochs=1), tmp_path / "run", devices=1, progress=False,
                     log=lambda *a: None)
    assert res["data_facts"]["shape"] == [6, 5, 3] and res["data_facts"]["num_train"] == 13
    ds = data.make_dataset(cfg)
    assert ds.shape == (6, 5, 3) and ds.split_arrays("train")[0].shape == (13, 6, 5, 3)
    assert sorted(p.name.split("-")[0] for p in (root / ".jaxres_cache").glob("*.npz")) == ["6x5", "8x8"]
    from PIL import Image

    first = np.asarray(Image.open(root / "train" / "cat" / "0.png").convert("RGB").resize((5, 6), Image.BILINEAR))
    assert any(np.array_equal(x, first) for x in folders.folder_arrays(root, (6, 5))["train"][0])


def test_a_folders_subsets_and_validation_take_every_class(tmp_path):
    """A folder lists its images class by class; jaxres keeps them in a fixed shuffled order, so the first N training
    images and the last N held out for validation are not one class."""
    from jaxres import config, data

    root = _folder(tmp_path / "pets", n=(10, 4))  # 3 classes of 10 training images, listed class by class
    cfg = config.DataConfig(name=str(root), batch_size=4, eval_batch_size=4, train_subset=24, validation=9)
    ds = data.make_dataset(cfg)
    for split in ("train", "validation"):
        assert sorted(set(ds.split_arrays(split)[1].tolist())) == [0, 1, 2], split
    again = data.make_dataset(cfg)  # the same order every time (and from the cache)
    np.testing.assert_array_equal(again.split_arrays("validation")[1], ds.split_arrays("validation")[1])


@pytest.mark.parametrize("argv, said", [
    (["--datasets", "svhn_cropped"], "any other tfds dataset needs data.source=tfds"),
    (["--datasets", "mnist", "--image-size", "32"], "data.image_size applies to a folder of images or a tfds"),
    (["--datasets", "Not A Name", "--source", "tfds"], "nor a tfds dataset name (lower case"),
    (["--datasets", "./pets", "--source", "tfds"], "is a user's file or folder, read by data.source=device"),
    (["--datasets", "mnist", "--set", "data.image_size=0"], "data.image_size"),
])
def test_data_doors_refuse_what_they_cannot_read_in_one_line(argv, said, capsys):
    assert compare.main(["--study", "tiny", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------ any tfds dataset by name, offline
def _tfds_metadata(root, name="svhn_cropped", n=48):
    """tfds's metadata for ``name``, with train and test splits of ``n`` examples, where
    ``tfds.testing.mock_data(policy=USE_FILES)`` reads it: the facts come from its builder.info as for a prepared
    dataset, the examples are mock_data's random ones (``n`` per split)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=root)
    template = dict(template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", dataset_name=builder.name,
                    filetype_suffix="tfrecord", data_dir=builder.data_dir)
    builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
        name=s, shard_lengths=[n], num_bytes=0, filename_template=tfds.core.ShardedFileTemplate(split=s, **template))
        for s in ("train", "test")]))
    Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)
    return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(root))


def _tfds_argv(out, *extra):
    return ["--study", "tiny", "--datasets", "svhn_cropped", "--source", "tfds", "--models", "seed_cnn", "--out",
            str(out), "--no-progress", "--devices", "1", "--batch-size", "16", "--epochs", "1", "--train-subset", "48",
            "--test-subset", "48", *extra]


def test_any_tfds_dataset_by_name_trains_with_its_facts_from_builder_info(tmp_path):
    """svhn_cropped is not in jaxres's catalog: its shape, classes and sizes come from tfds."""
    pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "out"
    with _tfds_metadata(tmp_path / "tfds"):
        assert compare.main(_tfds_argv(out, "--data-dir", str(tmp_path / "tfds"))) == 0
        assert compare.main(_tfds_argv(out, "--data-dir", str(tmp_path / "tfds"), "--image-size", "16")) == 0
    results = {json.dumps(r["config"]["data"]["image_size"]): r for r in
               (json.loads(p.read_text()) for p in out.glob("svhn_cropped_seed_cnn_seed0*/results.json"))}
    assert results["null"]["data_facts"] == {"name": "svhn_cropped", "format": "tfds", "shape": [32, 32, 3],
                                             "num_classes": 10, "num_train": 48, "num_test": 48}
    assert results["[16, 16]"]["data_facts"]["shape"] == [16, 16, 3]
    assert results["null"]["model"]["num_classes"] == 10 and results["null"]["final"]["test_examples"] == 48
    assert "svhn_cropped" in (out / "summary.md").read_text() and (out / "curves_svhn_cropped.png").is_file()


def test_a_tfds_dataset_from_python_and_the_ones_it_cannot_read(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    from jaxres import config, data
    from jaxres.errors import DataError

    import jaxres

    with _tfds_metadata(tmp_path / "tfds", n=40):
        run = config.RunConfig(data=config.DataConfig(name="svhn_cropped", source="tfds", batch_size=8,
                                                      image_size=24), epochs=1)
        res = jaxres.run(run, tmp_path / "run", data_dir=tmp_path / "tfds", devices=1, progress=False,
                         log=lambda *a: None)
        assert res["data_facts"]["shape"] == [24, 24, 3] and res["model"]["num_classes"] == 10
        cfg = config.DataConfig(name="svhn_cropped", source="tfds", batch_size=8, eval_batch_size=16,
                                train_subset=40, validation=8)
        ds = data.make_dataset(cfg, data_dir=tmp_path / "tfds")
        assert (ds.shape, ds.num_classes, ds.num_train, ds.splits) == ((32, 32, 3), 10, 32, ("validation", "test"))
        x, _ = next(iter(ds.train_batches(0)))["image"], None
        assert x.shape == (8, 32, 32, 3)
        with pytest.raises(DataError, match="tfds cannot make the dataset 'no_such_dataset_here'"):
            data.make_dataset(cfg.model_copy(update={"name": "no_such_dataset_here"}), data_dir=tmp_path / "tfds")
    # a dataset tfds knows but that is not prepared, offline: what to do, in one line, and nothing written
    out = tmp_path / "out"
    argv = _tfds_argv(out, "--data-dir", str(tmp_path / "empty"))
    assert compare.main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "svhn_cropped is not prepared in" in err and "tfds build svhn_cropped" in err, err
    assert len(err.splitlines()) == 1 and not out.exists()
