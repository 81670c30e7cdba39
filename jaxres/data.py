"""Datasets: a registry, the original raw files read with numpy, and batches for a run.

Each dataset is described once in ``jaxres.registry.DATASETS`` (its folder, file format, image shape,
classes, split sizes, default epochs, and the seed study's published accuracies where they exist); this
module reads each file format (``READERS``). Two sources give the same
examples for a split, behind one interface (``Dataset``; made by ``make_dataset``):

* ``DeviceDataset`` (``source="device"``, default, no TensorFlow): the original distribution
  files (MNIST IDX gz, CIFAR binary tar.gz) are read with numpy, held whole on the accelerator
  as uint8, and shuffled and batched there (the airbench trick: no input pipeline).
* ``TfdsDataset`` (``source="tfds"``, ``jaxres.tfds_data``): ``tfds.builder(name)`` prepared
  offline from the same files, read by tf.data. TensorFlow is imported only there.

Raw files live in ``raw_dir/<folder>/`` (the dataset's name unless it declares another) under the names
tfds uses (``registry.FORMAT_FILES``), e.g.
``../shared/datasets/mnist/train-images-idx3-ubyte.gz``; ``raw_dir`` defaults to the
``JAXRES_RAW_DIR`` environment variable.

Batches are ``{"image": float32 NHWC, "label": int32}``; evaluation batches also carry
``"mask"`` (1 for a real example, 0 for padding) so that every example counts once.
With several devices, arrays get a leading device axis for pmap (``shard``), or become global
arrays sharded over a device mesh (``Dataset.set_sharding``, the sharded-jit path). With several
processes each reads a disjoint slice of every split (``process_slice``; tfds:
``split_for_jax_process``) and makes its share, ``batch_size / process_count`` examples, of every
global batch; all make the same number of training and evaluation batches. The training order of
an epoch is a permutation fixed by (``order_seed``, epoch); augmentation draws from the key the
caller passes (``jaxres.train.Streams``), with the process index folded in when there are several.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import math
import os
import struct
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxres import registry
from jaxres.errors import DataError

if TYPE_CHECKING:
    from jaxres.config import DataConfig

from jaxres.registry import RAW_DIR_ENV  # noqa: E402 - the default of raw_dir
PREPROCESS, SOURCES = registry.PREPROCESS, registry.SOURCES
Batch = dict[str, Any]  # {"image": float NHWC, "label": int, optional "mask": float}
Arrays = tuple[np.ndarray, np.ndarray]  # (uint8 images NHWC, int32 labels)


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
    if not 1 <= ndim <= 3 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} has a bad IDX header (rank {ndim}); replace the file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):  # Python integers: no overflow for a bogus header
        raise DataError(f"{path} is truncated or damaged: its header says shape {dims} ({math.prod(dims):,} "
                        f"bytes), it holds {body.size:,}")
    return body.reshape(dims)


def _read_idx_pair(paths: list[Path], split: str) -> Arrays:
    img, lab = (paths[0], paths[1]) if split == "train" else (paths[2], paths[3])
    images, labels = _read_idx(img), _read_idx(lab)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{img} and {lab} should hold images (rank 3) and labels (rank 1), "
                        f"got ranks {images.ndim} and {labels.ndim}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img} has {images.shape[0]} images but {lab} has {labels.shape[0]} labels")
    return images[..., None], labels.astype(np.int32)


def _read_cifar(path: Path, members: list[str], label_bytes: int) -> Arrays:
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


def _read_cifar10(paths: list[Path], split: str) -> Arrays:
    members = ([f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
               else ["cifar-10-batches-bin/test_batch.bin"])
    return _read_cifar(paths[0], members, label_bytes=1)


def _read_cifar100(paths: list[Path], split: str) -> Arrays:
    return _read_cifar(paths[0], [f"cifar-100-binary/{split}.bin"], label_bytes=2)  # coarse, fine: fine label


# ------------------------------------------------------------------ the registry (jaxres.registry) and its readers
# One reader per file format of jaxres.registry.FORMAT_FILES: (the dataset's files, split) -> arrays.
READERS: dict[str, Callable[[list[Path], str], Arrays]] = {
    "idx": _read_idx_pair, "cifar10-binary": _read_cifar10, "cifar100-binary": _read_cifar100}
DATASETS = registry.DATASETS
DatasetInfo = registry.Dataset


def info(name: str) -> registry.Dataset:
    """The registry entry of ``name``; a DataError naming the known datasets otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_raw_dir(raw_dir: str | os.PathLike | None) -> Path | None:
    """``raw_dir``, else $JAXRES_RAW_DIR, else None."""
    raw_dir = raw_dir or os.environ.get(RAW_DIR_ENV)
    return Path(raw_dir).expanduser() if raw_dir else None


def raw_files(name: str, raw_dir: str | os.PathLike | None) -> list[Path]:
    """The original files of ``name`` in ``raw_dir``; a DataError saying what to put where if any is missing."""
    d = info(name)
    files, folder = d.files, d.dir
    root = resolve_raw_dir(raw_dir)
    want = ", ".join(files)
    if root is None:
        raise DataError(f"no raw files for {name}: put {want} in DIR/{folder}/ and pass --raw-dir DIR "
                        f"(or set {RAW_DIR_ENV}=DIR)")
    paths = [root / folder / f for f in files]
    for p in paths:
        if not p.is_file():
            raise DataError(f"missing {p}: {name} needs {want} in {root / folder}/ (the original distribution files)")
    return paths


def load_raw(name: str, split: str, raw_dir: str | os.PathLike | None = None) -> Arrays:
    """(images uint8 NHWC, labels int32) of ``split`` ("train" or "test"), in file order (read-only arrays)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; choose train or test")
    paths = raw_files(name, raw_dir)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _readonly(_load_raw_cached(name, split, stamp))


@functools.lru_cache(maxsize=4)
def _load_raw_cached(name: str, split: str, stamp: tuple) -> Arrays:
    """Parsed once per process and file version: a study reads each dataset once, not once per run."""
    d = info(name)
    images, labels = READERS[d.format]([Path(s[0]) for s in stamp], split)
    if images.shape[1:] != d.shape:
        raise DataError(f"{stamp[0][0]} holds images of shape {images.shape[1:]}, {name} has {d.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= d.num_classes):
        raise DataError(f"{stamp[0][0]} has labels outside 0..{d.num_classes - 1}; is it {name}?")
    return images, labels


def _readonly(arrays: Arrays) -> Arrays:
    for a in arrays:
        a.flags.writeable = False
    return arrays


def process_slice(n: int, process_index: int, process_count: int) -> slice:
    """This process's contiguous share of ``n`` examples (disjoint and covering over all processes)."""
    bounds = np.linspace(0, n, process_count + 1).round().astype(int)
    return slice(int(bounds[process_index]), int(bounds[process_index + 1]))


def shard(batch: Batch, n_devices: int | None = None) -> Batch:
    """Reshape every array of ``batch`` from (B, ...) to (n_devices, B // n_devices, ...), for pmap."""
    n = n_devices or jax.local_device_count()

    def split(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by the device count {n}; "
                             f"use a batch size that is a multiple of {n}")
        return x.reshape((n, x.shape[0] // n, *x.shape[1:]))

    return jax.tree_util.tree_map(split, batch)


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


# ------------------------------------------------------------------ the interface
class Dataset:
    """One dataset's train and test splits, batched for a run; sources fill in three methods.

    Both sources batch uint8 images and finish each batch on the device with one jitted
    function (augmentation, then scale or standardize), so they differ only in where the
    shuffle and the batching happen (``_train_arrays``, ``_eval_arrays``, ``split_arrays``).
    """

    def __init__(self, config: DataConfig, sizes: dict[str, int], order_seed: int = 0, n_devices: int = 1,
                 process_index: int | None = None, process_count: int | None = None,
                 global_sizes: dict[str, int] | None = None):
        c = config
        if c.preprocess not in PREPROCESS:
            raise DataError(f"unknown preprocess {c.preprocess!r}; choose one of {', '.join(PREPROCESS)}")
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        for what, b in (("batch size", c.batch_size), ("eval batch size", c.eval_batch_size)):
            if b <= 0 or b % (n_devices * self.process_count):
                raise DataError(f"{what} {b} must be a positive multiple of the device count "
                                f"{n_devices * self.process_count}")
        self.config, self.info, self.n_devices, self.order_seed = c, info(c.name), n_devices, order_seed
        self.shape, self.num_classes = self.info.shape, self.info.num_classes
        self._sizes = sizes  # this process's examples per split
        self.global_sizes = global_sizes or sizes  # every process's together
        # each process makes its share of every global batch: batch_size / process_count examples
        self.batch_size = c.batch_size // self.process_count
        self.eval_batch_size = c.eval_batch_size // self.process_count
        self.sharding: jax.sharding.Sharding | None = None  # set_sharding: batches as global arrays
        self.mean, self.std = jnp.zeros(self.shape[-1]), jnp.ones(self.shape[-1])
        if self.num_train < self.batch_size or self.steps_per_epoch < 1:
            raise DataError(f"batch size {c.batch_size} is larger than the {self.global_sizes['train']} training "
                            "examples; lower the batch size or raise the training subset")
        self._finish = jax.jit(self._finish_batch)

    def _set_stats(self, images: np.ndarray) -> None:
        """Per-channel mean and std of the whole training split (the same on every process)."""
        x = np.asarray(images, np.float64) / 255.0
        self.mean = jnp.asarray(x.mean(axis=(0, 1, 2)), jnp.float32)
        self.std = jnp.asarray(x.std(axis=(0, 1, 2)), jnp.float32)

    # ----------------------------------------------------------- what a source provides
    def split_arrays(self, split: str) -> Arrays:
        """This process's (uint8 images, int32 labels) of ``split`` as numpy arrays."""
        raise NotImplementedError

    def _train_arrays(self, epoch: int, start: int = 0) -> Iterator[Arrays]:
        """uint8 training batches of ``epoch`` in its order, whole batches only, from its ``start``-th on."""
        raise NotImplementedError

    def _eval_arrays(self, split: str) -> Iterator[Arrays]:
        """uint8 batches of every example of ``split`` once, in order (the last one may be short)."""
        raise NotImplementedError

    # ----------------------------------------------------------- sizes
    @property
    def num_train(self) -> int:
        return self._sizes["train"]

    @property
    def num_test(self) -> int:
        return self._sizes["test"]

    @property
    def steps_per_epoch(self) -> int:
        """Whole global batches per epoch: the same on every process (the smallest share decides)."""
        return (self.global_sizes["train"] // self.process_count) // self.batch_size

    def set_sharding(self, sharding: jax.sharding.Sharding | None) -> Dataset:
        """Deliver every batch as one global array with ``sharding`` (the sharded-jit path: batch axis over
        the devices of every process), made from this process's share
        (``jax.make_array_from_process_local_data``); None: local arrays (jit on one device, or pmap)."""
        self.sharding = sharding
        return self

    def epoch_seed(self, epoch: int) -> int:
        """The integer seed of ``epoch``'s training order, from (order_seed, epoch)."""
        return int(np.random.SeedSequence([self.order_seed, epoch]).generate_state(1)[0])

    # ----------------------------------------------------------- batches
    def _finish_batch(self, images, labels, mask, rng):
        if self.config.augment and rng is not None:
            images = augment_batch(rng, images)
        batch = {"image": (images.astype(jnp.float32) / 255.0 - self.mean) / self.std, "label": labels}
        if mask is not None:
            batch["mask"] = mask
        return batch

    def _shard(self, batch: Batch) -> Batch:
        if self.sharding is not None:
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharding, x), batch)
        return batch if self.n_devices == 1 else shard(batch, self.n_devices)

    def train_batches(self, epoch: int, rng: jax.Array | None = None, start: int = 0) -> Iterator[Batch]:
        """The training batches of ``epoch`` (whole batches only) from its ``start``-th on (a resume inside the
        epoch: the same order and augmentation as in one pass); ``rng`` draws the augmentation."""
        if self.config.augment and rng is None:
            raise ValueError("augmentation is on: pass the augmentation key (jaxres.train.Streams.augment)")
        if rng is not None and self.process_count > 1:  # each process draws for its own examples
            rng = jax.random.fold_in(rng, self.process_index)
        epoch_key = None if rng is None else jax.random.fold_in(rng, epoch)
        for step, (x, y) in enumerate(self._train_arrays(epoch, start), start):
            key = None if epoch_key is None else jax.random.fold_in(epoch_key, step)
            yield self._shard(self._finish(x, y, None, key))

    def eval_batches(self, split: str = "test") -> Iterator[Batch]:
        """Every example of ``split`` once, the last batch padded and masked. With several processes each
        evaluates its share, and all make as many batches as the largest share needs (fully masked ones
        where theirs has run out), so the collective steps line up."""
        b, n = self.eval_batch_size, self._sizes[split]
        largest = -(-self.global_sizes[split] // self.process_count)
        arrays = self._eval_arrays(split)
        for start in range(0, max(n, largest), b):
            x, y = next(arrays) if start < n else (None, None)
            real = max(0, min(b, n - start))
            if x is None:  # this process's share has run out: a masked copy of its first example
                x0, y0 = self._first[split]
                x, y = np.repeat(np.asarray(x0)[:1], b, axis=0), np.repeat(np.asarray(y0)[:1], b, axis=0)
            elif x.shape[0] < b:  # pad by repeating the last example
                x = np.concatenate([x, np.repeat(x[-1:], b - real, axis=0)])
                y = np.concatenate([y, np.repeat(y[-1:], b - real, axis=0)])
            yield self._shard(self._finish(x, y, (np.arange(b) < real).astype(np.float32), None))

    @functools.cached_property
    def _first(self) -> dict[str, Arrays]:
        return {s: next(iter(self._eval_arrays(s))) for s in ("train", "test")}


class DeviceDataset(Dataset):
    """The raw files read with numpy, both splits resident on the device, shuffled and batched there."""

    def __init__(self, config: DataConfig, raw_dir: str | os.PathLike | None = None, order_seed: int = 0,
                 n_devices: int = 1, process_index: int | None = None, process_count: int | None = None):
        p_index = jax.process_index() if process_index is None else process_index
        p_count = jax.process_count() if process_count is None else process_count
        subset = {"train": config.train_subset, "test": config.test_subset}
        arrays, train_images, global_sizes = {}, None, {}
        for split in ("train", "test"):
            images, labels = load_raw(config.name, split, raw_dir)
            images, labels = images[:subset[split]], labels[:subset[split]]
            global_sizes[split] = len(labels)
            if split == "train":
                train_images = images
            share = process_slice(len(labels), p_index, p_count)
            arrays[split] = (jnp.asarray(images[share]), jnp.asarray(labels[share]))
        super().__init__(config, {s: int(a[1].shape[0]) for s, a in arrays.items()}, order_seed, n_devices,
                         p_index, p_count, global_sizes)
        self._arrays = arrays
        if config.preprocess == "standardize":
            self._set_stats(train_images)
        self._gather = jax.jit(lambda images, labels, idx: (images[idx], labels[idx]))

    def split_arrays(self, split: str) -> Arrays:
        return tuple(np.asarray(a) for a in self._arrays[split])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The training order of ``epoch``: a permutation fixed by (order_seed, epoch)."""
        return np.random.default_rng(self.epoch_seed(epoch)).permutation(self.num_train)

    def _train_arrays(self, epoch: int, start: int = 0) -> Iterator[Arrays]:
        b = self.batch_size
        images, labels = self._arrays["train"]
        order = jnp.asarray(self.epoch_order(epoch)[:self.steps_per_epoch * b].reshape(-1, b))
        return (self._gather(images, labels, order[s]) for s in range(start, self.steps_per_epoch))

    def _eval_arrays(self, split: str) -> Iterator[Arrays]:
        b, n = self.eval_batch_size, self._sizes[split]
        images, labels = self._arrays[split]
        return (self._gather(images, labels, np.minimum(np.arange(s, s + b), n - 1)) for s in range(0, n, b))


def make_dataset(config: DataConfig, raw_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, order_seed: int = 0, n_devices: int = 1,
                 process_index: int | None = None, process_count: int | None = None) -> Dataset:
    """The dataset ``config`` describes, from its source (``config.source``)."""
    info(config.name)
    if config.source not in SOURCES:
        raise DataError(f"unknown data source {config.source!r}; choose one of {', '.join(SOURCES)}")
    kw = dict(order_seed=order_seed, n_devices=n_devices, process_index=process_index, process_count=process_count)
    if config.source == "tfds":
        from jaxres.tfds_data import TfdsDataset

        return TfdsDataset(config, raw_dir=raw_dir, data_dir=data_dir, **kw)
    return DeviceDataset(config, raw_dir=raw_dir, **kw)


def fingerprint(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Sorted per-example digests (image bytes + label): equal lists mean the same examples, any order."""
    return sorted(hashlib.sha1(im.tobytes() + bytes([int(l) % 256])).hexdigest()
                  for im, l in zip(np.asarray(images), np.asarray(labels)))
