"""Tiny datasets written in the original distribution formats (MNIST IDX gz, CIFAR-10 binary tar.gz).

Each class is a fixed random pattern plus noise, so a few steps of training lower the loss.
Unit tests use these files, so they never skip for want of the real ones; tests of the real
files read ../shared/datasets.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np


def _images(rng: np.random.Generator, labels: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    noise = rng.integers(-60, 61, (len(labels), *patterns.shape[1:]))
    return np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist(root: Path, n_train: int = 512, n_test: int = 256, seed: int = 0, name: str = "mnist") -> Path:
    """``root/<name>/`` with the four MNIST files."""
    rng = np.random.default_rng(seed)
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 256, (10, 28, 28))  # one per class, shared by both splits
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(_images(rng, labels, patterns)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    return d


def write_cifar10(root: Path, n_train: int = 500, n_test: int = 250, seed: int = 1) -> Path:
    """``root/cifar10/cifar-10-binary.tar.gz``: five train batches, one test batch, records of label + RGB planes."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar10"
    d.mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 256, (10, 32, 32, 3))
    members = {}
    for name, n in [(f"data_batch_{i}.bin", n_train // 5) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        planes = _images(rng, labels, patterns).transpose(0, 3, 1, 2).reshape(n, -1)  # R, G, B planes
        members[f"cifar-10-batches-bin/{name}"] = np.concatenate([labels[:, None].astype(np.uint8), planes], 1).tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]).encode() + b"\n"
    with tarfile.open(d / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for member, payload in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return d


def write_all(root: Path) -> Path:
    write_mnist(root)
    write_cifar10(root)
    return Path(root)


def history_result(model, seed, train_errs, test_errs, lr=0.1, batch=100):
    """A results.json of CIFAR-10 runs as the report reads it: per-epoch train/test error (%), 10 steps an epoch."""
    history = [{"epoch": e + 1, "train_accuracy": 1 - tr / 100, "test_accuracy": 1 - te / 100,
                "train_examples": 10 * batch} for e, (tr, te) in enumerate(zip(train_errs, test_errs))]
    return {"run": f"cifar10_{model}_seed{seed}",
            "config": {"data": {"name": "cifar10", "batch_size": batch}, "model": {"name": model},
                       "optimizer": {"lr": lr}, "epochs": len(history), "seed": seed},
            "history": history, "final": {**history[-1], "train_examples": 1000, "test_examples": 50},
            "wall_time_s": 1.0, "diverged": None}
