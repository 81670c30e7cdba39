"""The tensorflow-datasets source: tfds builders, the catalog's prepared offline from the raw files, read by tf.data.

TensorFlow is a heavy, optional guest: it is imported here only, when a run asks for
``source="tfds"``. ``prepare_tfds`` prepares the catalog's ``mnist`` / ``cifar10`` ... once from
the original files through ``DownloadConfig(manual_dir=...)``; any other tfds image-classification
dataset is named as tfds names it (``tfds_builder``: prepared beforehand in ``--data-dir``; jaxres
never downloads), its facts read from ``builder.info`` (``tfds_info``). ``TfdsDataset`` caches,
shuffles with a seed, batches and prefetches with tf.data, and gives the same examples as the device
source.
"""
from __future__ import annotations

import collections
import itertools
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import numpy as np

from jaxres import catalog
from jaxres.data.formats import Arrays, info, load_raw, raw_files, resolve_raw_dir
from jaxres.data.source import Dataset
from jaxres.errors import DataError

if TYPE_CHECKING:
    from jaxres.config import DataConfig


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
    info(name)
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
    for url, url_info in (base.url_infos or {}).items():
        path = root / info(name).dir / url_info.filename
        got = tfds.download.checksums.compute_url_info(path)
        if (got.size, got.checksum) != (url_info.size, url_info.checksum):
            warnings.warn(f"{path}: sha256 {got.checksum} ({int(got.size)} bytes) differs from the checksum tfds "
                          f"registered, {url_info.checksum} ({int(url_info.size)} bytes); using it (a re-compressed "
                          "copy?)", stacklevel=2)
        actual[url] = tfds.download.checksums.UrlInfo(size=got.size, checksum=got.checksum,
                                                      filename=url_info.filename)
    offline = type(base.__name__, (base,), {"name": base.name, "url_infos": actual, "__module__": __name__},
                   skip_registration=True)
    offline_builder = offline(data_dir=data_dir)
    offline_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root / info(name).dir)))
    return tfds.builder(name, data_dir=data_dir)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def tfds_builder(name: str, data_dir: str | os.PathLike | None = None):
    """The tfds builder ``name`` (any registered one: "svhn_cropped", "cifar10_corrupted/brightness_1"), prepared in
    ``data_dir`` (tfds's own where None); a DataError line saying what to do otherwise. jaxres never downloads: a
    study must not hang on a network, and the data it trains on is the data the user prepared."""
    tf, tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError, a bad config or version: one line
        raise DataError(f"tfds cannot make the dataset {name!r} ({type(e).__name__}: {_first_line(e)}); "
                        "tfds.list_builders() names the ones it knows") from None
    if not builder.is_prepared():
        raise DataError(f"tfds dataset {name} is not prepared in {builder.data_dir}: prepare it once (tfds build "
                        f"{name} --data_dir DIR, where it can be downloaded), then pass --data-dir DIR")
    return builder


def tfds_info(builder, image_size: tuple[int, int] | None = None) -> catalog.Dataset:
    """A tfds dataset's facts, read from ``builder.info``: the image shape (``image_size`` where given), the classes
    and the train and test split sizes; a DataError line for a dataset that is not image classification."""
    import tensorflow_datasets as tfds

    name, meta = builder.info.full_name, builder.info
    keys = meta.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise DataError(f"tfds dataset {name} has no (image, label) supervised keys ({keys}); jaxres trains image "
                        "classifiers")
    image, label = meta.features[keys[0]], meta.features[keys[1]]
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise DataError(f"tfds dataset {name}: {keys[0]} is {type(image).__name__} and {keys[1]} is "
                        f"{type(label).__name__}, not an Image and a ClassLabel; jaxres trains image classifiers")
    h, w, c = image.shape
    if image_size is not None:
        h, w = image_size
    elif h is None or w is None:
        raise DataError(f"tfds dataset {name}'s images differ in size ({image.shape}); set data.image_size (e.g. "
                        "data.image_size=64) to resize them as they are read")
    missing = [s for s in ("train", "test") if s not in meta.splits]
    if missing:
        raise DataError(f"tfds dataset {name} has no {' or '.join(missing)} split (it has "
                        f"{', '.join(meta.splits) or 'none'}); jaxres trains on train and reports on test")
    return catalog.Dataset(builder.name if not builder.builder_config else f"{builder.name}/{builder.builder_config.name}",
                           "tfds", (int(h), int(w), int(c)), int(label.num_classes),
                           int(meta.splits["train"].num_examples), int(meta.splits["test"].num_examples), epochs=10)


class TfdsDataset(Dataset):
    """tfds splits (each process its own slice, ``tfds.split_for_jax_process``) read by tf.data."""

    def __init__(self, config: DataConfig, raw_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, order_seed: int = 0, n_devices: int = 1,
                 process_index: int | None = None, process_count: int | None = None):
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if config.kind == "catalog":
            self._builder, facts = prepare_tfds(config.name, raw_dir, data_dir), info(config.name)
        else:  # any other tfds dataset, by its name
            self._builder = tfds_builder(config.name, data_dir)
            facts = tfds_info(self._builder, config.image_size)
            config.check(facts.num_train, facts.num_test)
        self._cache = {}
        whole = {s: self._builder.info.splits[s].num_examples for s in ("train", "test")}
        n, v = min(config.train_subset or whole["train"], whole["train"]), config.validation
        self._ranges = {"train": ("train", 0, n - v), "test": ("test", 0, min(config.test_subset or whole["test"],
                                                                               whole["test"]))}
        if v:  # the last v of the training examples used, as source.held_out takes them
            self._ranges["validation"] = ("train", n - v, n)
        sizes = {s: self._builder.info.splits[self._split_name(s)].num_examples for s in self._ranges}
        global_sizes = {s: stop - start for s, (_, start, stop) in self._ranges.items()}
        super().__init__(config, sizes, order_seed, n_devices, self.process_index, self.process_count, global_sizes,
                         facts)
        if config.preprocess == "standardize":  # statistics of the whole training split used (validation apart)
            self._set_stats(self._read(self._whole("train"))[0])
        for split in self._ranges:  # every split's dataset made now, none while a checkpoint is being written
            self._cache[split] = self._split(self._split_name(split), shuffle_files=False).cache()

    def _whole(self, split: str) -> str:
        """``split`` of the run as a tfds split over every process: "train[:45000]", "train[45000:50000]", ..."""
        name, start, stop = self._ranges[split]
        return f"{name}[{start}:{stop}]"

    def _split_name(self, split: str) -> str:
        import tensorflow_datasets as tfds

        return tfds.split_for_jax_process(self._whole(split), process_index=self.process_index,
                                          process_count=self.process_count)

    def _split(self, tfds_split: str, **kw):
        """The examples of ``tfds_split`` as (image, label) pairs, resized to ``data.image_size`` where it is set
        (bilinear, as Keras's image_dataset_from_directory), as uint8."""
        tf, _ = _import_tfds()
        ds = self._builder.as_dataset(split=tfds_split, as_supervised=True, **kw)
        size = self.config.image_size
        if size is None:
            return ds
        return ds.map(lambda x, y: (tf.cast(tf.clip_by_value(tf.round(tf.image.resize(x, size)), 0, 255), tf.uint8),
                                    y), num_parallel_calls=tf.data.AUTOTUNE)

    def _read(self, tfds_split: str) -> Arrays:
        import tensorflow_datasets as tfds

        batches = list(tfds.as_numpy(self._split(tfds_split, shuffle_files=False).batch(4096)))
        images = np.concatenate([x for x, _ in batches]) if batches else np.zeros((0, *self.shape), np.uint8)
        labels = np.concatenate([y for _, y in batches]) if batches else np.zeros((0,), np.int32)
        return images.astype(np.uint8), labels.astype(np.int32)

    def split_arrays(self, split: str) -> Arrays:
        return self._read(self._split_name(split))

    def _train_arrays(self, epoch: int, start: int = 0) -> Iterator[Arrays]:
        batches = self._batches("train", self.batch_size, shuffle_seed=self.epoch_seed(epoch))
        return itertools.islice(batches, start, None)  # tf.data's order: the first batches are read and passed

    def _eval_arrays(self, split: str) -> Iterator[Arrays]:
        return self._batches(split, self.eval_batch_size)

    def _batches(self, split: str, batch_size: int, shuffle_seed: int | None = None) -> Iterator[Arrays]:
        """uint8 batches from tf.data: cached, shuffled with a seed (training), batched, prefetched."""
        tf, tfds = _import_tfds()
        ds = self._cache[split]  # one cached dataset per split, filled on its first pass
        if shuffle_seed is not None:
            ds = ds.shuffle(self._sizes[split], seed=shuffle_seed, reshuffle_each_iteration=False)
        ds = ds.batch(batch_size, drop_remainder=shuffle_seed is not None).prefetch(tf.data.AUTOTUNE)
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
