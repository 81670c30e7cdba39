"""The datasets' original distribution files, read with numpy (no TensorFlow).

Owns: one reader per file format (``read_idx``, ``read_cifar10``, ``read_cifar100``, each named by its entry
in ``jaxres.catalog.FORMATS``), where the raw files of a dataset are (``raw_files``: ``raw_dir/<folder>/`` under the names tfds uses; ``raw_dir``
defaults to the ``JAXRES_RAW_DIR`` environment variable), ``load_raw`` (cached, read-only arrays) and
``fingerprint`` (which examples a split holds, in any order).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import tarfile
from pathlib import Path

import numpy as np

from jaxres import catalog
from jaxres.errors import DataError
from jaxres.catalog import RAW_DIR_ENV

Arrays = tuple[np.ndarray, np.ndarray]  # (uint8 images NHWC, int32 labels)


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e} (truncated or corrupt? replace the file)") from None


def _read_idx_file(path: Path) -> np.ndarray:
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


def read_idx(paths: list[Path], split: str) -> Arrays:
    img, lab = (paths[0], paths[1]) if split == "train" else (paths[2], paths[3])
    images, labels = _read_idx_file(img), _read_idx_file(lab)
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


def read_cifar10(paths: list[Path], split: str) -> Arrays:
    members = ([f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
               else ["cifar-10-batches-bin/test_batch.bin"])
    return _read_cifar(paths[0], members, label_bytes=1)


def read_cifar100(paths: list[Path], split: str) -> Arrays:
    return _read_cifar(paths[0], [f"cifar-100-binary/{split}.bin"], label_bytes=2)  # coarse, fine: fine label


# ------------------------------------------------------------------ the catalog's datasets
DATASETS = catalog.DATASETS
DatasetInfo = catalog.Dataset


def info(name: str, image_size: tuple[int, int] | None = None) -> catalog.Dataset:
    """The catalog entry of ``name``, or, for a user's data (``data.name`` = the path of an .npz or of a folder of
    images, resized to ``image_size`` where given), one made from it: its image shape, classes and split sizes read
    from the data, never typed twice; a DataError otherwise. (A tfds dataset by name: ``tfds_source.tfds_info``.)"""
    if name in DATASETS:
        return DATASETS[name]
    if catalog.is_user_data(name):
        splits = user_arrays(name, image_size)
        (x, y), test = splits["train"], splits["test"][1]
        return catalog.Dataset(name, catalog.user_format(name), tuple(x.shape[1:]), int(y.max()) + 1, len(y),
                               len(test), epochs=10)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or the path of an .npz of arrays")


def user_arrays(name: str, image_size: tuple[int, int] | None = None) -> dict[str, Arrays]:
    """Both splits of a user's data (an .npz, or a folder of images by class: ``jaxres.data.folders``), checked."""
    path = _user_file(name)
    if catalog.user_format(name) == "npz":
        return _npz_arrays(path, _stamp(path))
    from jaxres.data.folders import folder_arrays

    return folder_arrays(path, image_size)


def _user_file(name: str) -> Path:
    path = Path(name).expanduser()
    if catalog.user_format(name) == "npz" and not path.is_file():
        raise DataError(f"missing {path}: data.name names a user's arrays, an .npz with x_train, y_train, x_test, "
                        "y_test")
    if catalog.user_format(name) != "npz" and not path.is_dir():
        raise DataError(f"missing {path}: data.name names a folder of images by class ({path}/train/<class>/*, "
                        f"{path}/test/<class>/*)")
    return path


def _stamp(path: Path) -> tuple:
    return (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)


NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


@functools.lru_cache(maxsize=2)
def _npz_arrays(path: Path, stamp: tuple) -> dict[str, Arrays]:
    """A user's .npz, read once per file version and checked whole: each problem one DataError naming the file and
    the fix, before anything is trained."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for keys in NPZ_KEYS.values() for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path} has no {', '.join(missing)}: save it with np.savez(path, x_train=..., "
                                "y_train=..., x_test=..., y_test=...)")
            arrays = {split: (f[x], f[y]) for split, (x, y) in NPZ_KEYS.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e} (truncated, or not an .npz? save it again)") from None
    out = {split: _checked_split(path, split, x, y) for split, (x, y) in arrays.items()}
    (xtr, ytr), (xte, yte) = out["train"], out["test"]
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{path}: x_train's images are {xtr.shape[1:]} and x_test's {xte.shape[1:]}; make them one size")
    if yte.size and ytr.size and yte.max() > ytr.max():
        raise DataError(f"{path}: y_test has class {int(yte.max())}, which y_train lacks (its classes are "
                        f"0..{int(ytr.max())}); every test class needs training examples")
    return out


def _checked_split(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> Arrays:
    xk, yk = NPZ_KEYS[split]
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W): one channel
    if x.ndim != 4:
        raise DataError(f"{path}: {xk} has shape {x.shape}; give images as (N, H, W) or (N, H, W, C)")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {xk} is {x.dtype}; give uint8 pixels 0..255 (floats in [0, 1]: "
                        "(x * 255).round().astype(np.uint8))")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {yk} has shape {y.shape} and dtype {y.dtype}; give one integer label per image")
    if len(x) != len(y):
        raise DataError(f"{path}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
    if not len(y):
        raise DataError(f"{path}: {xk} is empty")
    if y.min() < 0:
        raise DataError(f"{path}: {yk} has label {int(y.min())}; labels are classes 0..C-1")
    return np.ascontiguousarray(x), y.astype(np.int32)


def read_npz(paths: list[Path], split: str) -> Arrays:
    """A user's arrays (catalog format "npz"): x_<split>, y_<split> of the .npz, checked (``_npz_arrays``)."""
    return _npz_arrays(paths[0], _stamp(paths[0]))[split]


def resolve_raw_dir(raw_dir: str | os.PathLike | None) -> Path | None:
    """``raw_dir``, else $JAXRES_RAW_DIR, else None."""
    raw_dir = raw_dir or os.environ.get(RAW_DIR_ENV)
    return Path(raw_dir).expanduser() if raw_dir else None


def raw_files(name: str, raw_dir: str | os.PathLike | None) -> list[Path]:
    """The original files of ``name`` in ``raw_dir``; a DataError saying what to put where if any is missing. A user's
    arrays are their own file, wherever it is."""
    if catalog.is_user_data(name):
        return [_user_file(name)]
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


def load_raw(name: str, split: str, raw_dir: str | os.PathLike | None = None,
             image_size: tuple[int, int] | None = None) -> Arrays:
    """(images uint8 NHWC, labels int32) of ``split`` ("train" or "test"), in file order (read-only arrays); a folder
    of images resized to ``image_size`` where given."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; choose train or test")
    paths = raw_files(name, raw_dir)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _readonly(_load_raw_cached(name, split, stamp, None if image_size is None else tuple(image_size)))


@functools.lru_cache(maxsize=4)
def _load_raw_cached(name: str, split: str, stamp: tuple, image_size: tuple[int, int] | None) -> Arrays:
    """Parsed once per process and file version: a study reads each dataset once, not once per run."""
    d = info(name, image_size)
    reader = catalog.resolve("format", d.format)
    paths = [Path(s[0]) for s in stamp]
    images, labels = reader(paths, split, image_size) if image_size else reader(paths, split)
    if images.shape[1:] != d.shape:
        raise DataError(f"{_file_of(paths, split, 'images')} holds images of shape {images.shape[1:]}, {name} has "
                        f"{d.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= d.num_classes):
        raise DataError(f"{_file_of(paths, split, 'labels')} has labels outside 0..{d.num_classes - 1} (found "
                        f"{labels.min()}..{labels.max()}); is it {name}?")
    return images, labels


def _file_of(paths: list[Path], split: str, kind: str) -> Path:
    """The file of ``split`` that holds its ``kind`` ("images" or "labels") where a format keeps them apart (IDX:
    train-labels-idx1-ubyte.gz ...), else the format's one file (CIFAR's archive)."""
    prefix = "train" if split == "train" else "t10k"
    return next((p for p in paths if kind in p.name and p.name.startswith(prefix)), paths[0])


def _readonly(arrays: Arrays) -> Arrays:
    for a in arrays:
        a.flags.writeable = False
    return arrays


def fingerprint(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Sorted per-example digests (image bytes + label): equal lists mean the same examples, any order."""
    return sorted(hashlib.sha1(im.tobytes() + bytes([int(l) % 256])).hexdigest()
                  for im, l in zip(np.asarray(images), np.asarray(labels)))
