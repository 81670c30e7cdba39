"""Data: the registry, raw readers (synthetic files in the original formats, and the real files in
../shared/datasets), batching guarantees, tfds offline, the no-TensorFlow path."""
import gzip
import hashlib
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxres import config, data
from jaxres.data import tfds_source as tfds_data

ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def mnist_raw(real_raw_dir):
    return {s: data.load_raw("mnist", s, real_raw_dir) for s in ("train", "test")}


@pytest.fixture(scope="session")
def cifar_raw(real_raw_dir):
    return {s: data.load_raw("cifar10", s, real_raw_dir) for s in ("train", "test")}


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One tfds data dir per test session for the real files; each dataset is prepared into it at most once."""
    return tmp_path_factory.mktemp("tfds")


# ------------------------------------------------------------------ raw files
def test_registry_describes_each_dataset_once():
    assert {"mnist", "cifar10"} <= set(data.DATASETS)  # every entry is read in tests/test_catalog.py
    mnist, cifar = data.DATASETS["mnist"], data.DATASETS["cifar10"]
    assert mnist.shape == (28, 28, 1) and cifar.shape == (32, 32, 3) and data.DATASETS["cifar100"].num_classes == 100
    assert (mnist.num_train, mnist.num_test, cifar.num_train) == (60000, 10000, 50000)
    assert mnist.published["seed_resnet"]["test"] == 0.9874 and cifar.published["seed_cnn"]["test"] == 0.5569
    with pytest.raises(data.DataError, match=r"unknown dataset 'imagenet'; choose one of mnist"):
        data.info("imagenet")


def test_synthetic_files_read_like_the_real_ones(raw_dir):
    for name, n in (("mnist", (512, 256)), ("cifar10", (500, 250))):
        (xtr, ytr), (xte, yte) = (data.load_raw(name, s, raw_dir) for s in ("train", "test"))
        assert (len(ytr), len(yte)) == n and xtr.shape[1:] == data.DATASETS[name].shape and xtr.dtype == np.uint8
        assert ytr.dtype == np.int32 and sorted(set(ytr.tolist())) == list(range(10))


def test_mnist_raw_files(mnist_raw):
    (xtr, ytr), (xte, yte) = mnist_raw["train"], mnist_raw["test"]
    assert xtr.shape == (60000, 28, 28, 1) and xte.shape == (10000, 28, 28, 1)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int32
    assert xtr.min() == 0 and xtr.max() == 255
    assert np.bincount(yte, minlength=10).tolist() == MNIST_TEST_HISTOGRAM
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4] and yte[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_cifar10_raw_files(cifar_raw):
    (xtr, ytr), (xte, yte) = cifar_raw["train"], cifar_raw["test"]
    assert xtr.shape == (50000, 32, 32, 3) and xte.shape == (10000, 32, 32, 3) and xtr.dtype == np.uint8
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    assert np.bincount(ytr, minlength=10).tolist() == [5000] * 10
    assert 100 < xte.mean() < 160  # natural images, channels decoded in the right place


def test_missing_raw_dir_says_which_files_and_which_flag(monkeypatch):
    monkeypatch.delenv(data.RAW_DIR_ENV, raising=False)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz.*DIR/mnist/.*--raw-dir DIR.*JAXRES_RAW_DIR"):
        data.load_raw("mnist", "train", None)


def test_raw_dir_from_environment(monkeypatch, raw_dir):
    monkeypatch.setenv(data.RAW_DIR_ENV, str(raw_dir))
    assert data.load_raw("mnist", "test", None)[1].shape == (256,)


def test_missing_file_is_named(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(data.DataError, match=r"missing .*mnist/train-images-idx3-ubyte.gz"):
        data.load_raw("mnist", "train", tmp_path)


@pytest.fixture
def truncated_mnist(tmp_path, raw_dir):
    """A raw dir whose MNIST test images stop half-way (a valid gzip of a short IDX file)."""
    d = tmp_path / "mnist"
    shutil.copytree(raw_dir / "mnist", d)
    body = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(body[: len(body) // 2]))
    return tmp_path


def test_truncated_file_is_named(truncated_mnist, tmp_path, raw_dir):
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz is truncated"):
        data.load_raw("mnist", "test", truncated_mnist)
    cut = tmp_path / "cut" / "mnist"
    shutil.copytree(raw_dir / "mnist", cut)
    raw = (cut / "train-labels-idx1-ubyte.gz").read_bytes()
    (cut / "train-labels-idx1-ubyte.gz").unlink()
    (cut / "train-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])  # a cut gzip stream
    with pytest.raises(data.DataError, match=r"cannot read .*train-labels-idx1-ubyte.gz"):
        data.load_raw("mnist", "train", tmp_path / "cut")


def test_idx_file_with_a_bogus_rank_byte_is_named(tmp_path, raw_dir):
    d = tmp_path / "mnist"
    shutil.copytree(raw_dir / "mnist", d)
    body = bytearray(gzip.decompress((d / "train-labels-idx1-ubyte.gz").read_bytes()))
    body[3] = 200  # a valid magic, then a rank no IDX file has
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(body)))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte.gz has a bad IDX header \(rank 200\)"):
        data.load_raw("mnist", "train", tmp_path)


def test_an_idx_header_with_huge_dimensions_gives_their_true_size(tmp_path, raw_dir):
    """A labels file claiming rank 3 and 4e9 per axis: the size in the message is the true product, not an
    integer that overflowed."""
    d = tmp_path / "mnist"
    shutil.copytree(raw_dir / "mnist", d)
    bogus = b"\0\0\x08\x03" + struct.pack(">3I", 4_000_000_000, 4_000_000_000, 4_000_000_000) + bytes(10)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bogus))
    with pytest.raises(data.DataError) as info:
        data.load_raw("mnist", "train", tmp_path)
    assert f"({4_000_000_000 ** 3:,} bytes), it holds 10" in str(info.value)


# ------------------------------------------------------------------ batching (device source)
@pytest.fixture
def dataset(raw_dir):
    def make(n_devices=1, order_seed=0, **kw):
        cfg = config.DataConfig(**{"name": "mnist", "batch_size": 50, "eval_batch_size": 48, "train_subset": 505,
                                   "test_subset": 250, **kw})
        return data.make_dataset(cfg, raw_dir=raw_dir, order_seed=order_seed, n_devices=n_devices)
    return make


def test_training_epoch_covers_each_example_at_most_once_and_drops_only_the_remainder(dataset):
    ds = dataset()
    assert isinstance(ds, data.DeviceDataset) and ds.steps_per_epoch == 10
    train_x = np.asarray(ds.split_arrays("train")[0]).reshape(505, -1)
    index = {row.tobytes(): i for i, row in enumerate(train_x)}
    seen = []
    for batch in ds.train_batches(0):
        assert batch["image"].shape == (50, 28, 28, 1) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32
        x = np.rint(np.asarray(batch["image"]) * 255).astype(np.uint8).reshape(50, -1)
        seen += [index[row.tobytes()] for row in x]
    assert len(seen) == len(set(seen)) == 500  # 5 left over, none twice
    assert 0.0 <= float(np.min(batch["image"])) and float(np.max(batch["image"])) <= 1.0


def test_order_is_fixed_by_seed_and_epoch(dataset):
    a, b, c = dataset(), dataset(), dataset(order_seed=1)
    assert np.array_equal(a.epoch_order(3), b.epoch_order(3))
    assert not np.array_equal(a.epoch_order(3), a.epoch_order(4))
    assert not np.array_equal(a.epoch_order(3), c.epoch_order(3))
    first = next(a.train_batches(2))
    np.testing.assert_array_equal(np.asarray(first["label"]), np.asarray(next(b.train_batches(2))["label"]))


def test_evaluation_sees_every_example_once_with_padding_masked(dataset):
    ds = dataset()
    batches = list(ds.eval_batches("test"))
    assert len(batches) == 6  # 5 x 48 + 10
    mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])[mask > 0]
    assert mask.sum() == 250 and mask[-38:].sum() == 0
    np.testing.assert_array_equal(labels, ds.split_arrays("test")[1])


def test_sharded_batches_for_several_devices(dataset):
    ds4 = dataset(n_devices=4, batch_size=100, eval_batch_size=96, train_subset=400)
    assert next(ds4.train_batches(0))["image"].shape == (4, 25, 28, 28, 1)
    assert next(ds4.eval_batches())["mask"].shape == (4, 24)
    with pytest.raises(data.DataError, match=r"batch size 100 must be a positive multiple of the device count 8"):
        dataset(n_devices=8, batch_size=100, eval_batch_size=96, train_subset=400)


def test_standardize_and_augment(dataset):
    kw = dict(name="cifar10", preprocess="standardize", train_subset=400, test_subset=200)
    ds = dataset(augment=True, **kw)
    x = np.concatenate([np.asarray(b["image"]) for b in ds.eval_batches("test")])
    assert np.all(np.abs(x.mean(axis=(0, 1, 2))) < 0.2) and np.all(np.abs(x.std(axis=(0, 1, 2)) - 1) < 0.2)
    key = jax.random.key(7)
    a, b = next(ds.train_batches(0, key)), next(dataset(**kw).train_batches(0))
    np.testing.assert_array_equal(np.asarray(a["label"]), np.asarray(b["label"]))  # same examples ...
    assert not np.allclose(np.asarray(a["image"]), np.asarray(b["image"]))  # ... cropped and flipped
    again, epoch1 = next(ds.train_batches(0, key)), list(ds.train_batches(1, key))
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(a["image"]))  # drawn from the key alone
    assert not np.array_equal(np.asarray(ds.epoch_order(0)), np.asarray(ds.epoch_order(1))) and len(epoch1) == 8
    with pytest.raises(ValueError, match="pass the augmentation key"):
        next(ds.train_batches(0))
    tail = list(ds.train_batches(1, key, start=5))  # a resume inside the epoch: the same last batches
    assert len(tail) == 3 and all(np.array_equal(np.asarray(t["image"]), np.asarray(e["image"]))
                                  for t, e in zip(tail, epoch1[5:]))


@pytest.mark.parametrize("n, count", [(60000, 3), (10000, 7), (1050, 4)])
def test_process_slices_are_disjoint_and_cover(n, count):
    slices = [data.process_slice(n, i, count) for i in range(count)]
    covered = np.concatenate([np.arange(n)[s] for s in slices])
    np.testing.assert_array_equal(covered, np.arange(n))


def test_each_simulated_process_reads_its_own_examples(raw_dir):
    cfg = config.DataConfig(name="mnist", batch_size=48, train_subset=300, test_subset=241, eval_batch_size=30)
    parts = [data.make_dataset(cfg, raw_dir=raw_dir, process_index=i, process_count=3) for i in range(3)]
    labels = [p.split_arrays("test")[1] for p in parts]
    assert [len(l) for l in labels] == [80, 81, 80]
    np.testing.assert_array_equal(np.concatenate(labels), data.load_raw("mnist", "test", raw_dir)[1][:241])
    # each process makes its third of every global batch, all as many steps; evaluation lines up too:
    # as many batches everywhere (the largest share decides), padding masked, every example counted once
    assert [(p.batch_size, p.eval_batch_size, p.steps_per_epoch) for p in parts] == [(16, 10, 6)] * 3
    assert [sum(1 for _ in p.train_batches(0)) for p in parts] == [6] * 3
    evals = [list(p.eval_batches("test")) for p in parts]
    assert [len(e) for e in evals] == [9] * 3
    assert [sum(float(np.sum(b["mask"])) for b in e) for e in evals] == [80, 81, 80]
    with pytest.raises(data.DataError, match="batch size 50 must be a positive multiple of the device count 3"):
        data.make_dataset(cfg.model_copy(update={"batch_size": 50}), raw_dir=raw_dir, process_index=0, process_count=3)


# ------------------------------------------------------------------ tfds, offline
def _tfds_checksum_files_digest() -> str:
    import tensorflow_datasets as tfds

    pkg = Path(tfds.__file__).parent
    h = hashlib.sha256()
    for p in sorted(list((pkg / "url_checksums").rglob("*")) + list(pkg.rglob("checksums.tsv"))):
        if p.is_file():
            h.update(str(p.relative_to(pkg)).encode() + p.read_bytes())
    return h.hexdigest()


def _prepare(name, raw, tfds_dir):
    """prepare_tfds, checking that the tfds package is not modified and that each re-compressed (or
    synthetic) file gets one checksum warning."""
    before = _tfds_checksum_files_digest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = tfds_data.prepare_tfds(name, raw, tfds_dir)
    assert _tfds_checksum_files_digest() == before, "the installed tensorflow_datasets package was modified"
    mismatch = [str(w.message) for w in caught if "differs from the checksum tfds registered" in str(w.message)]
    assert len(mismatch) == len(data.DATASETS[name].files) and all("sha256" in m for m in mismatch)
    return builder


def test_tfds_source_gives_the_device_sources_examples(raw_dir, tmp_path):
    """Synthetic CIFAR-10 files through tfds (prepared offline) and through numpy: the same examples."""
    _prepare("cifar10", raw_dir, tmp_path)
    cfg = config.DataConfig(name="cifar10", source="tfds", batch_size=50, eval_batch_size=96)
    ds = data.make_dataset(cfg, raw_dir=raw_dir, data_dir=tmp_path)
    dev = data.make_dataset(cfg.model_copy(update={"source": "device"}), raw_dir=raw_dir)
    assert isinstance(ds, tfds_data.TfdsDataset) and (ds.num_train, ds.num_test) == (500, 250)
    for split in ("train", "test"):
        x, y = ds.split_arrays(split)
        assert x.dtype == np.uint8 and y.dtype == np.int32
        assert data.fingerprint(x, y) == data.fingerprint(*dev.split_arrays(split))
    batches = list(ds.eval_batches("test"))  # every test example once, padding masked
    assert len(batches) == 3 and sum(float(np.sum(b["mask"])) for b in batches) == 250
    assert batches[0]["image"].dtype == np.float32
    ep0, ep0b, ep1 = (np.asarray(next(ds.train_batches(e))["label"]) for e in (0, 0, 1))
    assert np.array_equal(ep0, ep0b) and not np.array_equal(ep0, ep1)
    assert sum(1 for _ in ds.train_batches(0)) == 10
    cfg3 = cfg.model_copy(update={"batch_size": 48})  # a global batch: a multiple of the 3 processes
    parts = [data.make_dataset(cfg3, raw_dir=raw_dir, data_dir=tmp_path, process_index=i, process_count=3)
             for i in range(3)]  # simulated processes: disjoint slices that together are the whole split
    assert [p.num_test for p in parts] == [84, 83, 83]
    assert sorted(sum((data.fingerprint(*p.split_arrays("test")) for p in parts), [])) == \
        data.fingerprint(*dev.split_arrays("test"))


@pytest.mark.slow  # about 30 s each; the tfds path is tested on synthetic files by default
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_tfds_offline_prepare_on_the_real_files(name, real_raw_dir, tfds_dir, request):
    builder = _prepare(name, real_raw_dir, tfds_dir)
    assert builder.info.splits["test"].num_examples == 10000
    cfg = config.DataConfig(name=name, source="tfds", batch_size=128, eval_batch_size=1000)
    ds = data.make_dataset(cfg, raw_dir=real_raw_dir, data_dir=tfds_dir)
    raw = request.getfixturevalue(f"{name.replace('10', '')}_raw")
    for split in ("train", "test"):
        x, y = ds.split_arrays(split)
        assert x.shape == raw[split][0].shape and x.dtype == np.uint8 and y.dtype == np.int32
        if split == "test" or name == "mnist":  # same examples, tfds orders them by its own keys
            assert data.fingerprint(x, y) == data.fingerprint(*raw[split])
    batches = list(ds.eval_batches("test"))
    assert sum(float(np.sum(b["mask"])) for b in batches) == 10000
    if name == "mnist":
        labels = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"]) > 0] for b in batches])
        assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_HISTOGRAM
        assert sum(1 for _ in ds.train_batches(0)) == 60000 // 128


def test_tfds_prepare_with_a_truncated_file_names_it_and_leaves_nothing_half_prepared(truncated_mnist, tmp_path):
    import tensorflow_datasets as tfds

    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz is truncated"):
        tfds_data.prepare_tfds("mnist", truncated_mnist, tmp_path / "tfds")
    assert not tfds.builder("mnist", data_dir=tmp_path / "tfds").is_prepared()


def test_tfds_without_raw_dir_or_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(data.RAW_DIR_ENV, raising=False)
    import tensorflow_datasets as tfds

    def no_network(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(data.DataError, match=r"--raw-dir DIR"):
        tfds_data.prepare_tfds("mnist", None, tmp_path)


# ------------------------------------------------------------------ no TensorFlow
def test_import_and_training_work_without_tensorflow(raw_dir):
    """A subprocess in which `import tensorflow` fails trains a tiny run through the raw-file path."""
    code = f"""
import sys
sys.modules["tensorflow"] = None; sys.modules["tensorflow_datasets"] = None  # import fails
import jax, jaxres, optax
from jaxres import config, data, models, train
cfg = config.DataConfig(name="mnist", batch_size=64, train_subset=256, test_subset=128)
ds = data.make_dataset(cfg, raw_dir={str(raw_dir)!r})
state = train.create_train_state(models.seed_cnn(), jax.random.key(0), ds.shape)
fit = train.fit(state, ds, 1, train.Streams.from_seed(0), progress=False, log=lambda s: None)
hist = fit.history
assert hist[0]["test_examples"] == 128, hist
try:
    data.make_dataset(config.DataConfig(name="mnist", source="tfds"), raw_dir={str(raw_dir)!r})
except data.DataError as e:
    print("tfds refused:", e)
print("ok", hist[0]["train_loss"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout and "tfds refused: source 'tfds' needs tensorflow" in out.stdout


def test_the_validation_split_is_the_last_training_examples_held_out(raw_dir, tmp_path):
    """data.validation=N: the last N of the training examples used (after train_subset) form the validation split,
    out of the training split, on both sources; 0 (the default) changes nothing."""
    _prepare("cifar10", raw_dir, tmp_path)
    cfg = config.DataConfig(name="cifar10", batch_size=50, eval_batch_size=50, train_subset=400, validation=100)
    x, y = data.load_raw("cifar10", "train", raw_dir)
    for source in ("device", "tfds"):
        ds = data.make_dataset(cfg.model_copy(update={"source": source}), raw_dir=raw_dir, data_dir=tmp_path)
        assert ds.splits == ("validation", "test") and ds.num_train == 300 and ds.global_sizes["validation"] == 100
        train, held = data.fingerprint(*ds.split_arrays("train")), data.fingerprint(*ds.split_arrays("validation"))
        if source == "device":  # file order
            assert train == data.fingerprint(x[:300], y[:300]) and held == data.fingerprint(x[300:400], y[300:400])
        else:  # tfds's own order of its train split (prepared shuffled), as train_subset takes it there
            assert sorted(train + held) == data.fingerprint(*ds._read("train[:400]")) and not set(train) & set(held)
        assert sum(float(np.sum(b["mask"])) for b in ds.eval_batches("validation")) == 100
    plain = data.make_dataset(cfg.model_copy(update={"validation": 0}), raw_dir=raw_dir)
    assert plain.splits == ("test",) and plain.num_train == 400
    with pytest.raises(config.ConfigError, match="data.validation=400 holds out every training example"):
        cfg.model_copy(update={"validation": 400}).check()
    with pytest.raises(config.ConfigError, match=r"larger than the 50 training examples of cifar10 \(350 held out"):
        config.DataConfig(name="cifar10", batch_size=64, train_subset=400, validation=350).check()
