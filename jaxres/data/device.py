"""The device source (``source="device"``, the default): the raw files read with numpy, both splits held
whole on the accelerator as uint8, shuffled and batched there (no input pipeline, no TensorFlow)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxres.data.formats import Arrays, load_raw
from jaxres.data.source import Dataset, held_out, process_slice

if TYPE_CHECKING:
    from jaxres.config import DataConfig


class DeviceDataset(Dataset):
    """The raw files read with numpy, both splits resident on the device, shuffled and batched there."""

    def __init__(self, config: DataConfig, raw_dir: str | os.PathLike | None = None, order_seed: int = 0,
                 n_devices: int = 1, process_index: int | None = None, process_count: int | None = None):
        p_index = jax.process_index() if process_index is None else process_index
        p_count = jax.process_count() if process_count is None else process_count
        arrays, global_sizes = {}, {}
        train, test = (load_raw(config.name, s, raw_dir, config.image_size) for s in ("train", "test"))
        for split, (images, labels) in held_out(config, train, test).items():
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
