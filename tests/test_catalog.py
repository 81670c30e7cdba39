"""The catalog (jaxres.catalog): every entry resolves to what builds it, facts are declared (not parsed from
names), and every dataset's reader reads a small file written in its format."""
import dataclasses
import inspect
import gzip
import io
import struct
import tarfile

import numpy as np
import pytest

from jaxres import config, data, catalog


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _planes(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR records: R, G, B planes


def write_idx(folder, splits):
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images, labels = splits[split]
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(images[..., 0]))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))


def write_cifar10(folder, splits):
    images, labels = splits["train"]
    parts = np.array_split(np.arange(len(labels)), 5)
    members = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin":
               np.concatenate([labels[p, None].astype(np.uint8), _planes(images[p])], 1).tobytes()
               for i, p in enumerate(parts)}
    images, labels = splits["test"]
    members["cifar-10-batches-bin/test_batch.bin"] = np.concatenate([labels[:, None].astype(np.uint8),
                                                                    _planes(images)], 1).tobytes()
    _tar(folder / "cifar-10-binary.tar.gz", members)


def write_cifar100(folder, splits):
    members = {}
    for split, (images, labels) in splits.items():
        coarse = (labels // 5).astype(np.uint8)  # a coarse label first, then the fine one the dataset uses
        members[f"cifar-100-binary/{split}.bin"] = np.concatenate(
            [coarse[:, None], labels[:, None].astype(np.uint8), _planes(images)], 1).tobytes()
    _tar(folder / "cifar-100-binary.tar.gz", members)


def write_npz(folder, splits):
    np.savez(folder / "arrays.npz", **{f"{k}_{split}": a for split, (x, y) in splits.items()
                                       for k, a in (("x", x), ("y", y))})


def write_image_folder(folder, splits):
    from PIL import Image

    for split, (x, y) in splits.items():
        for i, (image, label) in enumerate(zip(x, y)):
            (folder / split / f"class{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / f"class{label}" / f"{i:05d}.png")


# One writer per file format: a format added to the catalog gets its row here
WRITERS = {"idx": write_idx, "cifar10-binary": write_cifar10, "cifar100-binary": write_cifar100, "npz": write_npz,
           "image-folder": write_image_folder}


def test_a_users_arrays_read_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), np.arange(n) % 3) for s, n in
              (("train", 12), ("test", 6))}
    write_npz(tmp_path, splits)
    for split, (x, y) in splits.items():
        got = catalog.resolve("format", "npz")([tmp_path / "arrays.npz"], split)
        assert np.array_equal(got[0], x) and np.array_equal(got[1], y) and got[1].dtype == np.int32
    from jaxres.data import folders

    write_image_folder(tmp_path / "folder", splits)  # PNG is lossless: the same pixels, listed class by class,
    for split, (x, y) in splits.items():             # then kept in the folder's fixed shuffled order
        got = catalog.resolve("format", "image-folder")([tmp_path / "folder"], split)
        order = np.argsort(y, kind="stable")[np.random.default_rng(folders.ORDER_SEED).permutation(len(y))]
        assert np.array_equal(got[0], x[order]) and np.array_equal(got[1], y[order])


def test_every_format_has_files_a_reader_and_a_writer_here():
    assert set(catalog.FORMATS) == set(WRITERS)
    # a user's arrays or image folder: their own path
    assert all(f.files for f in catalog.FORMATS.values() if f.name not in ("npz", "image-folder"))
    assert {d.format for d in catalog.DATASETS.values()} <= set(catalog.FORMATS)


# what each kind's entries resolve to: the parameters its callers pass, in order
SIGNATURES = {"format": ["paths", "split"], "optimizer": ["s", "lr", "mask"],
              "schedule": ["cfg", "lr", "total_steps"], "norm": ["kind", "train", "axis_name", "dtype"],
              "kernel_init": []}


@pytest.mark.parametrize("kind", catalog.KINDS)
def test_every_catalog_entry_resolves_to_what_builds_it(kind):
    """Walks every entry of every kind: it imports, it is what its callers call, and an unknown name or kind is
    one ValueError naming the known ones."""
    from flax import linen as nn

    table = catalog._TABLES[kind]
    assert table
    for name in table:
        built = catalog.resolve(kind, name)
        if kind == "model":
            assert issubclass(built, nn.Module) and built.__name__ == table[name].module, name
            built(**table[name].settings, num_classes=10)  # the preset's settings are its fields
            continue
        params = inspect.signature(built).parameters  # the callers' arguments, then only ones with defaults
        assert list(params)[:len(SIGNATURES[kind])] == SIGNATURES[kind], (kind, name)
        assert all(p.default is not p.empty for p in list(params.values())[len(SIGNATURES[kind]):]), (kind, name)
        if kind == "kernel_init":
            assert built()(__import__("jax").random.key(0), (3, 3, 2, 4)).shape == (3, 3, 2, 4), name
    with pytest.raises(ValueError, match=f"unknown {kind} 'nope'; choose one of"):
        catalog.resolve(kind, "nope")
    with pytest.raises(ValueError, match="unknown kind"):
        catalog.resolve("nope", "adam")


@pytest.mark.parametrize("name", list(catalog.DATASETS))
def test_every_datasets_reader_reads_a_file_written_in_its_format(name, tmp_path):
    d = catalog.DATASETS[name]
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 15), ("test", 5)):
        splits[split] = (rng.integers(0, 256, (n, *d.shape), dtype=np.uint8),
                         rng.integers(0, d.num_classes, n).astype(np.int32))
    splits["train"][1][0] = d.num_classes - 1  # the largest label is read as itself
    folder = tmp_path / d.dir
    folder.mkdir()
    WRITERS[d.format](folder, splits)
    for split, (images, labels) in splits.items():
        got_images, got_labels = data.load_raw(name, split, tmp_path)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


def test_a_dataset_declares_its_folder(tmp_path, monkeypatch):
    """A dataset whose files sit in a folder not named after it: one registry entry with ``folder``."""
    entry = dataclasses.replace(catalog.DATASETS["mnist"], name="mnist_copy", folder="MNIST-raw")
    monkeypatch.setitem(catalog.DATASETS, "mnist_copy", entry)
    with pytest.raises(data.DataError, match=r"MNIST-raw/train-images-idx3-ubyte.gz: mnist_copy needs"):
        data.raw_files("mnist_copy", tmp_path)
    (tmp_path / "MNIST-raw").mkdir()
    images = np.zeros((3, 28, 28, 1), np.uint8)
    write_idx(tmp_path / "MNIST-raw", {"train": (images, np.arange(3)), "test": (images, np.arange(3))})
    assert data.load_raw("mnist_copy", "test", tmp_path)[1].tolist() == [0, 1, 2]


def test_presets_declare_their_architecture():
    """Family, depth, widths and the residual twin are facts of the entry; the report groups by them."""
    from jaxres.report import depth

    for name, p in catalog.PRESETS.items():
        assert p.name == name and p.family in ("seed", "he") and p.depth > 0 and p.widths
        if p.twin:  # a twin is the same network with the shortcuts the other way
            twin = catalog.PRESETS[p.twin]
            assert twin.twin == name and twin.residual != p.residual and twin.depth == p.depth
    assert catalog.PRESETS["seed_cnn"].depth == 6 and catalog.PRESETS["resnet110"].depth == 110
    assert depth._depth_of("resnet56") == ("resnet", 56) and depth._depth_of("seed_resnet") is None
    wide = dataclasses.replace(catalog.PRESETS["resnet20"], name="wide_resnet20", widths=(64, 128, 256))
    catalog.PRESETS["wide_resnet20"] = wide  # a name without its depth in a form the report could parse ...
    try:
        assert depth._depth_of("wide_resnet20") == ("resnet", 20)  # ... still has its facts
    finally:
        del catalog.PRESETS["wide_resnet20"]


def test_every_registered_name_is_a_config_value():
    for key, names in (("data.name", catalog.DATASETS), ("model.name", catalog.PRESETS),
                       ("optimizer.name", catalog.OPTIMIZERS), ("schedule.name", catalog.SCHEDULES),
                       ("model.norm", catalog.NORMS), ("model.shortcut", catalog.SHORTCUTS),
                       ("model.kernel_init", catalog.KERNEL_INITS), ("data.preprocess", catalog.PREPROCESS),
                       ("data.source", catalog.SOURCES)):
        for name in names:
            assert config.get(config.replace(config.RunConfig(), key, name), key) == name


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_out_of_range_name_the_labels_file(split, tmp_path):
    """They once named the images file."""
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), np.arange(n) % 10) for s, n in
              (("train", 6), ("test", 4))}
    splits[split][1][2] = 12
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist", splits)
    prefix = "train" if split == "train" else "t10k"
    with pytest.raises(data.DataError, match=rf"{prefix}-labels-idx1-ubyte.gz has labels outside 0..9 \(found 0..12\)"):
        data.load_raw("mnist", split, tmp_path)
