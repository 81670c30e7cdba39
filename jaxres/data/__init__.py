"""Datasets: the catalog's entries, the original raw files read with numpy, and batches for a run.

Each dataset is described once in ``jaxres.catalog.DATASETS`` (its folder, file format, image shape,
classes, split sizes, default epochs, and the seed study's published accuracies where they exist); this
module reads each file format (``read_idx`` ...). Two sources give the same
examples for a split, behind one interface (``Dataset``; made by ``make_dataset``):

* ``DeviceDataset`` (``source="device"``, default, no TensorFlow): the original distribution
  files (MNIST IDX gz, CIFAR binary tar.gz) are read with numpy, held whole on the accelerator
  as uint8, and shuffled and batched there (the airbench trick: no input pipeline).
* ``TfdsDataset`` (``source="tfds"``, ``jaxres.data.tfds_source``): ``tfds.builder(name)`` prepared
  offline from the same files, read by tf.data. TensorFlow is imported only there.

Raw files live in ``raw_dir/<folder>/`` (the dataset's name unless it declares another) under the names
tfds uses (``catalog.FORMATS``), e.g.
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

import os
from typing import TYPE_CHECKING

from jaxres import catalog
from jaxres.data.device import DeviceDataset
from jaxres.data.formats import (RAW_DIR_ENV, Arrays, fingerprint, info, load_raw, raw_files,
                                 resolve_raw_dir)
from jaxres.data.source import PREPROCESS, Batch, Dataset, augment_batch, process_slice, shard
from jaxres.errors import DataError

if TYPE_CHECKING:
    from jaxres.config import DataConfig

DATASETS, SOURCES = catalog.DATASETS, catalog.SOURCES
__all__ = ["Arrays", "Batch", "DATASETS", "DataError", "Dataset", "DeviceDataset", "PREPROCESS", "RAW_DIR_ENV",
           "SOURCES", "augment_batch", "fingerprint", "info", "load_raw", "make_dataset", "process_slice",
           "raw_files", "resolve_raw_dir", "shard"]


def make_dataset(config: DataConfig, raw_dir: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, order_seed: int = 0, n_devices: int = 1,
                 process_index: int | None = None, process_count: int | None = None) -> Dataset:
    """The dataset ``config`` describes, from its source (``config.source``)."""
    if config.source not in SOURCES:
        raise DataError(f"unknown data source {config.source!r}; choose one of {', '.join(SOURCES)}")
    if config.kind in ("npz", "image-folder"):
        d = info(config.name, config.image_size)
        config.check(d.num_train, d.num_test)  # the checks the catalog's sizes allow at config time
    kw = dict(order_seed=order_seed, n_devices=n_devices, process_index=process_index, process_count=process_count)
    if config.source == "tfds":
        from jaxres.data.tfds_source import TfdsDataset

        return TfdsDataset(config, raw_dir=raw_dir, data_dir=data_dir, **kw)
    return DeviceDataset(config, raw_dir=raw_dir, **kw)
