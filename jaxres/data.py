"""Datasets: the original raw files read with numpy, tfds pipelines, and batches on the device.

Two sources give the same examples for a split:

* ``source="device"`` (default, no TensorFlow): the original distribution files (MNIST IDX
  gz, CIFAR binary tar.gz) are read with numpy, held whole on the accelerator as uint8, and
  shuffled and batched there with ``jax.random`` (the airbench trick: no input pipeline).
* ``source="tfds"``: ``tfds.builder(name)`` prepared offline from the same files through
  ``DownloadConfig(manual_dir=...)``, read by tf.data (cache, seeded shuffle, batch,
  prefetch). TensorFlow is imported only here.

Raw files live in ``raw_dir/<name>/`` under the names tfds uses (see RAW_FILES), e.g.
``../shared/datasets/mnist/train-images-idx3-ubyte.gz``; ``raw_dir`` defaults to the
``JAXRES_RAW_DIR`` environment variable.

Batches are ``{"image": float32 NHWC, "label": int32}``; evaluation batches also carry
``"mask"`` (1 for a real example, 0 for padding) so that every example counts once.
With several devices, arrays get a leading device axis (``train.shard``).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import hashlib
import os
import struct
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

RAW_DIR_ENV = "JAXRES_RAW_DIR"
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
PREPROCESS = ("scale", "standardize")
SOURCES = ("device", "tfds")
RAW_FILES = {
    "mnist": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    "cifar10": ("cifar-10-binary.tar.gz",),
    "cifar100": ("cifar-100-binary.tar.gz",),
}
RAW_FILES["fashion_mnist"] = RAW_FILES["mnist"]
SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


class DataError(ValueError):
    """A dataset cannot be read: the message names the file or setting and the fix."""


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def resolve_raw_dir(raw_dir: str | os.PathLike | None) -> Path | None:
    """``raw_dir``, else $JAXRES_RAW_DIR, else None."""
    raw_dir = raw_dir or os.environ.get(RAW_DIR_ENV)
    return Path(raw_dir).expanduser() if raw_dir else None


def raw_files(name: str, raw_dir: str | os.PathLike | None) -> list[Path]:
    """The original files of ``name`` in ``raw_dir``; a DataError saying what to put where if any is missing."""
    _check_name(name)
    root = resolve_raw_dir(raw_dir)
    want = ", ".join(RAW_FILES[name])
    if root is None:
        raise DataError(f"no raw files for {name}: put {want} in DIR/{name}/ and pass --raw-dir DIR "
                        f"(or set {RAW_DIR_ENV}=DIR)")
    paths = [root / name / f for f in RAW_FILES[name]]
    for p in paths:
        if not p.is_file():
            raise DataError(f"missing {p}: {name} needs {want} in {root / name}/ (the original distribution files)")
    return paths


# ------------------------------------------------------------------ raw files (numpy, no TensorFlow)
def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e} (truncated or corrupt? replace the file)") from None


def _read_idx(path: Path) -> np.ndarray:
    data = _read_gz(path)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: its header says {dims} ({int(np.prod(dims))} bytes), "
                        f"it holds {body.size}")
    return body.reshape(dims)


def _read_cifar(path: Path, members: list[str], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + 32 * 32 * 3
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = {m.name: m for m in tar.getmembers()}
            chunks = []
            for m in members:
                if m not in names:
                    raise DataError(f"{path} has no {m}: is it the CIFAR binary version?")
                chunks.append(tar.extractfile(names[m]).read())
    except (OSError, EOFError, tarfile.TarError) as e:
        raise DataError(f"cannot read {path}: {e} (truncated or corrupt? replace the file)") from None
    data = np.frombuffer(b"".join(chunks), np.uint8)
    if data.size % record:
        raise DataError(f"{path} is truncated: {data.size} bytes is not a whole number of {record}-byte records")
    data = data.reshape(-1, record)
    images = data[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), data[:, label_bytes - 1].astype(np.int32)


def load_raw(name: str, split: str, raw_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, labels int32) of ``split`` ("train" or "test"), in file order (read-only arrays)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; choose train or test")
    paths = raw_files(name, raw_dir)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _readonly(_load_raw_cached(name, split, stamp))


@functools.lru_cache(maxsize=4)
def _load_raw_cached(name: str, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Parsed once per process and file version: a study reads each dataset once, not once per run."""
    paths = [Path(s[0]) for s in stamp]
    if name in ("mnist", "fashion_mnist"):
        img, lab = (paths[0], paths[1]) if split == "train" else (paths[2], paths[3])
        images, labels = _read_idx(img), _read_idx(lab)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{img} has {images.shape[0]} images but {lab} has {labels.shape[0]} labels")
        return images[..., None], labels.astype(np.int32)
    if name == "cifar10":
        members = ([f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
                   else ["cifar-10-batches-bin/test_batch.bin"])
        return _read_cifar(paths[0], members, label_bytes=1)
    return _read_cifar(paths[0], [f"cifar-100-binary/{split}.bin"], label_bytes=2)  # coarse, fine: fine label


def _readonly(arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


def process_slice(n: int, process_index: int, process_count: int) -> slice:
    """This process's contiguous share of ``n`` examples (disjoint and covering over all processes)."""
    bounds = np.linspace(0, n, process_count + 1).round().astype(int)
    return slice(int(bounds[process_index]), int(bounds[process_index + 1]))


# ------------------------------------------------------------------ tfds (TensorFlow imported lazily)
def _import_tfds():
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"source 'tfds' needs tensorflow and tensorflow-datasets ({e}); "
                        "use source 'device', which reads the raw files without TensorFlow") from None
    tf.config.set_visible_devices([], "GPU")  # keep TensorFlow off the accelerator JAX uses
    return tf, tfds


def prepare_tfds(name: str, raw_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None):
    """The tfds builder for ``name``, prepared once into ``data_dir`` from the files in ``raw_dir``.

    Files whose checksums differ from the ones tfds registered (re-compressed copies) are
    accepted with one warning each. The installed tfds package is never written to: the
    actual checksums go to a private subclass of the builder, not to tfds's checksum files.
    """
    _check_name(name)
    tf, tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    root = resolve_raw_dir(raw_dir)
    if root is None:
        try:
            builder.download_and_prepare()
            return builder
        except Exception:  # noqa: BLE001 - any download failure means: give us the files
            raw_files(name, None)  # raises the error that says which files to put where
    for split in ("train", "test"):  # parse with numpy first, so a bad file is named before tfds starts
        load_raw(name, split, root)

    base = type(builder)
    actual = {}
    for url, info in (base.url_infos or {}).items():
        path = root / name / info.filename
        got = tfds.download.checksums.compute_url_info(path)
        if (got.size, got.checksum) != (info.size, info.checksum):
            warnings.warn(f"{path}: sha256 {got.checksum} ({int(got.size)} bytes) differs from the checksum tfds "
                          f"registered, {info.checksum} ({int(info.size)} bytes); using it (a re-compressed copy?)",
                          stacklevel=2)
        actual[url] = tfds.download.checksums.UrlInfo(size=got.size, checksum=got.checksum, filename=info.filename)
    offline = type(base.__name__, (base,), {"name": base.name, "url_infos": actual, "__module__": __name__},
                   skip_registration=True)
    offline_builder = offline(data_dir=data_dir)
    offline_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root / name)))
    return tfds.builder(name, data_dir=data_dir)


def _tfds_split(split: str, process_index: int, process_count: int) -> str:
    import tensorflow_datasets as tfds

    return tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)


# ------------------------------------------------------------------ the dataset object
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that decides which batches a run sees."""

    name: str = "mnist"
    batch_size: int = 128
    eval_batch_size: int = 1000
    preprocess: str = "scale"          # x/255 (the seed's choice) or per-channel standardization
    augment: bool = False              # CIFAR: 4-pixel pad + random crop + horizontal flip
    source: str = "device"             # "device" (numpy raw files, no TensorFlow) or "tfds"
    train_subset: int | None = None    # first N training examples only (quick protocols)
    test_subset: int | None = None
    seed: int = 0


def augment_batch(rng: jax.Array, images: jnp.ndarray, pad: int = 4) -> jnp.ndarray:
    """Random crop after ``pad``-pixel zero padding, and random horizontal flip, per image."""
    n, h, w, _ = images.shape
    k1, k2 = jax.random.split(rng)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k1, (n, 2), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))
    images = crop(padded, offsets)
    flip = jax.random.bernoulli(k2, 0.5, (n,))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


class Dataset:
    """One dataset's train and test splits, batched for a run (see the module docstring).

    Both sources batch uint8 images and finish each batch on the device with one jitted
    function (augmentation, then scale or standardize), so they differ only in where the
    shuffle and the batching happen.
    """

    def __init__(self, config: DataConfig, raw_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, process_index: int | None = None,
                 process_count: int | None = None, n_devices: int = 1):
        c = config
        _check_name(c.name)
        if c.preprocess not in PREPROCESS:
            raise DataError(f"unknown preprocess {c.preprocess!r}; choose one of {', '.join(PREPROCESS)}")
        if c.source not in SOURCES:
            raise DataError(f"unknown data source {c.source!r}; choose one of {', '.join(SOURCES)}")
        for what, b in (("batch size", c.batch_size), ("eval batch size", c.eval_batch_size)):
            if b <= 0 or b % n_devices:
                raise DataError(f"{what} {b} must be a positive multiple of the device count {n_devices}")
        self.config, self.n_devices = c, n_devices
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        self.shape, self.num_classes = SHAPES[c.name], NUM_CLASSES[c.name]
        self._subset = {"train": c.train_subset, "test": c.test_subset}
        if c.source == "device":
            self._arrays = {}
            for split in ("train", "test"):
                images, labels = load_raw(c.name, split, raw_dir)
                images, labels = images[:self._subset[split]], labels[:self._subset[split]]
                if split == "train" and c.preprocess == "standardize":
                    self._set_stats(images)
                share = process_slice(len(labels), self.process_index, self.process_count)
                self._arrays[split] = (jnp.asarray(images[share]), jnp.asarray(labels[share]))
            self._sizes = {s: int(a[1].shape[0]) for s, a in self._arrays.items()}
        else:
            self._builder, self._tf_cache = prepare_tfds(c.name, raw_dir, data_dir), {}
            self._sizes = {s: self._builder.info.splits[self._split_name(s)].num_examples for s in ("train", "test")}
            if c.preprocess == "standardize":
                whole = self._subset["train"]
                self._set_stats(self.split_arrays("train", f"train[:{whole}]" if whole else "train")[0])
        if c.preprocess == "scale":
            self.mean, self.std = jnp.zeros(self.shape[-1]), jnp.ones(self.shape[-1])
        if self.num_train < c.batch_size:
            raise DataError(f"batch size {c.batch_size} is larger than the {self.num_train} training examples "
                            "of this process; lower the batch size or raise the training subset")
        self._finish = jax.jit(self._finish_batch)
        self._gather = jax.jit(lambda images, labels, idx: (images[idx], labels[idx]))

    def _set_stats(self, images: np.ndarray) -> None:
        """Per-channel mean and std of the whole training split (the same on every process)."""
        x = np.asarray(images, np.float64) / 255.0
        self.mean = jnp.asarray(x.mean(axis=(0, 1, 2)), jnp.float32)
        self.std = jnp.asarray(x.std(axis=(0, 1, 2)), jnp.float32)

    def _split_name(self, split: str) -> str:
        n = self._subset[split]
        name = f"{split}[:{n}]" if n else split
        return _tfds_split(name, self.process_index, self.process_count)

    def split_arrays(self, split: str, tfds_split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """This process's (uint8 images, int32 labels) of ``split`` as numpy arrays."""
        if self.config.source == "device":
            return tuple(np.asarray(a) for a in self._arrays[split])
        import tensorflow_datasets as tfds

        ds = self._builder.as_dataset(split=tfds_split or self._split_name(split), batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(ds)
        return images.astype(np.uint8), labels.astype(np.int32)

    # ----------------------------------------------------------- sizes
    @property
    def num_train(self) -> int:
        return self._sizes["train"]

    @property
    def num_test(self) -> int:
        return self._sizes["test"]

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.config.batch_size

    # ----------------------------------------------------------- batches
    def _finish_batch(self, images, labels, mask, rng):
        if self.config.augment and rng is not None:
            images = augment_batch(rng, images)
        batch = {"image": (images.astype(jnp.float32) / 255.0 - self.mean) / self.std, "label": labels}
        if mask is not None:
            batch["mask"] = mask
        return batch

    def _shard(self, batch):
        if self.n_devices == 1:
            return batch
        from jaxres.train import shard

        return shard(batch, self.n_devices)

    def epoch_seed(self, epoch: int) -> int:
        return int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1)[0])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The device source's training order for ``epoch``: a permutation fixed by (seed, epoch)."""
        return np.random.default_rng(self.epoch_seed(epoch)).permutation(self.num_train)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, jax.Array]]:
        """The training batches of ``epoch`` (drop_remainder), from ``start_step`` on (for resume)."""
        b = self.config.batch_size
        aug_key = jax.random.fold_in(jax.random.key(self.config.seed), epoch)
        if self.config.source == "device":
            images, labels = self._arrays["train"]
            order = jnp.asarray(self.epoch_order(epoch)[:self.steps_per_epoch * b].reshape(-1, b))
            raw = (self._gather(images, labels, order[s]) for s in range(start_step, self.steps_per_epoch))
        else:
            raw = self._tf_batches("train", b, shuffle_seed=self.epoch_seed(epoch), skip=start_step)
        for step, (x, y) in enumerate(raw, start_step):
            yield self._shard(self._finish(x, y, None, jax.random.fold_in(aug_key, step)))

    def eval_batches(self, split: str = "test") -> Iterator[dict[str, jax.Array]]:
        """Every example of ``split`` once, the last batch padded and masked."""
        b, n = self.config.eval_batch_size, self._sizes[split]
        if self.config.source == "device":
            images, labels = self._arrays[split]
            raw = (self._gather(images, labels, np.minimum(np.arange(s, s + b), n - 1)) for s in range(0, n, b))
        else:
            raw = self._tf_batches(split, b)
        for start, (x, y) in zip(range(0, n, b), raw):
            real = min(b, n - start)
            if x.shape[0] < b:  # the tf.data remainder: pad by repeating its last example
                x = np.concatenate([x, np.repeat(x[-1:], b - real, axis=0)])
                y = np.concatenate([y, np.repeat(y[-1:], b - real, axis=0)])
            yield self._shard(self._finish(x, y, (np.arange(b) < real).astype(np.float32), None))

    def _tf_batches(self, split: str, batch_size: int, shuffle_seed: int | None = None,
                    skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """uint8 batches from tf.data: cached, shuffled with a seed (training), batched, prefetched."""
        tf, tfds = _import_tfds()
        if split not in self._tf_cache:  # one cached dataset per split, filled on its first pass
            self._tf_cache[split] = self._builder.as_dataset(split=self._split_name(split), as_supervised=True,
                                                             shuffle_files=False).cache()
        ds = self._tf_cache[split]
        if shuffle_seed is not None:
            ds = ds.shuffle(self._sizes[split], seed=shuffle_seed, reshuffle_each_iteration=False)
        ds = ds.batch(batch_size, drop_remainder=shuffle_seed is not None).skip(skip).prefetch(tf.data.AUTOTUNE)
        return _prefetch_to_device(iter(tfds.as_numpy(ds)), 2)


def _prefetch_to_device(batches: Iterator, size: int) -> Iterator:
    """Start copying the next ``size`` batches to the device while the current one trains."""
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(jax.device_put(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def fingerprint(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Sorted per-example digests (image bytes + label): equal lists mean the same examples, any order."""
    return sorted(hashlib.sha1(im.tobytes() + bytes([int(l) % 256])).hexdigest()
                  for im, l in zip(np.asarray(images), np.asarray(labels)))
