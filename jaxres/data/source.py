"""The batch-source interface every data source implements, and what batches are.

Owns: ``Dataset`` (one dataset's train and test splits batched for a run: shuffling order, augmentation,
evaluation padding with a mask, placement on devices; a source fills in three methods), ``shard`` (the
pmap layout), ``process_slice`` (each process's share) and ``augment_batch``.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxres import catalog
from jaxres.data.formats import Arrays, info
from jaxres.errors import DataError

if TYPE_CHECKING:
    from jaxres.config import DataConfig

PREPROCESS = catalog.PREPROCESS
Batch = dict[str, Any]  # {"image": float NHWC, "label": int, optional "mask": float}


def process_slice(n: int, process_index: int, process_count: int) -> slice:
    """This process's contiguous share of ``n`` examples (disjoint and covering over all processes)."""
    bounds = np.linspace(0, n, process_count + 1).round().astype(int)
    return slice(int(bounds[process_index]), int(bounds[process_index + 1]))


def held_out(config: DataConfig, train: Arrays, test: Arrays) -> dict[str, Arrays]:
    """The splits a run uses: the first ``train_subset`` training examples, less the last ``validation`` of them
    (the "validation" split, where ``validation`` > 0), and the first ``test_subset`` test examples."""
    n, v = len(train[1]) if config.train_subset is None else config.train_subset, config.validation
    splits = {"train": tuple(a[:n - v] for a in train), "test": tuple(a[:config.test_subset] for a in test)}
    if v:
        splits["validation"] = tuple(a[n - v:n] for a in train)
    return splits


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


class Dataset:
    """One dataset's train and test splits, batched for a run; sources fill in three methods.

    Both sources batch uint8 images and finish each batch on the device with one jitted
    function (augmentation, then scale or standardize), so they differ only in where the
    shuffle and the batching happen (``_train_arrays``, ``_eval_arrays``, ``split_arrays``).
    """

    def __init__(self, config: DataConfig, sizes: dict[str, int], order_seed: int = 0, n_devices: int = 1,
                 process_index: int | None = None, process_count: int | None = None,
                 global_sizes: dict[str, int] | None = None, facts: catalog.Dataset | None = None):
        c = config
        if c.preprocess not in PREPROCESS:
            raise DataError(f"unknown preprocess {c.preprocess!r}; choose one of {', '.join(PREPROCESS)}")
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        for what, b in (("batch size", c.batch_size), ("eval batch size", c.eval_batch_size)):
            if b <= 0 or b % (n_devices * self.process_count):
                raise DataError(f"{what} {b} must be a positive multiple of the device count "
                                f"{n_devices * self.process_count}")
        # the dataset's facts: the catalog's, or read from a user's data or a tfds builder
        self.info = facts or info(c.name, c.image_size)
        self.config, self.n_devices, self.order_seed = c, n_devices, order_seed
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
        std = x.std(axis=(0, 1, 2))
        flat = [str(c) for c in np.flatnonzero(np.ptp(np.asarray(images), axis=(0, 1, 2)) == 0)]
        if flat:  # a std of 0 (or of rounding error): standardizing divides by it, and the loss explodes
            raise DataError(f"data.preprocess=standardize: channel {', '.join(flat)} of the {len(x)} training images "
                            "has one value everywhere (standard deviation 0), so standardizing divides by 0; check "
                            "the data files, or set data.preprocess=scale")
        self.mean = jnp.asarray(x.mean(axis=(0, 1, 2)), jnp.float32)
        self.std = jnp.asarray(std, jnp.float32)

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

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits evaluated after each epoch: "validation" (where ``data.validation`` > 0), then "test"."""
        return ("validation", "test") if "validation" in self._sizes else ("test",)

    @functools.cached_property
    def _first(self) -> dict[str, Arrays]:
        return {s: next(iter(self._eval_arrays(s))) for s in ("train", *self.splits)}
