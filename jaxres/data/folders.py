"""A user's images in a folder per class, the layout of Keras's ``image_dataset_from_directory``, torchvision's
``ImageFolder`` and tfds's ``ImageFolder``: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``, read with Pillow (no
TensorFlow). Classes are the training split's folder names in sorted order; every image is one size; all
grayscale images stay one channel, otherwise every image becomes RGB.

The folder is read once and cached beside it (``DIR/.jaxres_cache/<key>.npz``, uint8 arrays that load in a
moment), the key a hash of every file's path, size and modification time: a file added, removed or changed
makes a new cache. Every problem is one DataError naming the file or folder and the fix, before anything is
trained: no train/ or test/, an empty class folder, a test class the training split lacks, a file that is not
an image, images of several sizes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from jaxres.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray]
CACHE = ".jaxres_cache"
SPLITS = ("train", "test")


def read_folder(paths: list[Path], split: str) -> Arrays:
    """The catalog format "image-folder": ``split``'s (uint8 images NHWC, int32 labels) of the folder."""
    return folder_arrays(paths[0])[split]


def folder_arrays(root: Path) -> dict[str, Arrays]:
    """Both splits of the folder ``root``, from its cache where the cache matches the folder's files."""
    listing = _listing(Path(root))
    key = hashlib.sha256(json.dumps([(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                                     for split in SPLITS for files in listing[split].values() for p in files]
                                    ).encode()).hexdigest()[:20]
    return _arrays(Path(root), key)


@functools.lru_cache(maxsize=2)
def _arrays(root: Path, key: str) -> dict[str, Arrays]:
    cache = root / CACHE / f"{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return {s: (f[f"x_{s}"], f[f"y_{s}"]) for s in SPLITS}
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache: read the folder again and write it anew
    out = _read(root, _listing(root))
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{f"{k}_{s}": a for s, (x, y) in out.items() for k, a in (("x", x), ("y", y))})
        tmp.replace(cache)
        for stale in cache.parent.glob("*.npz"):  # a cache of the folder as it was: it will never match again
            if stale != cache:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: read it again next time
    return out


def _listing(root: Path) -> dict[str, dict[str, list[Path]]]:
    """split -> class -> its files, sorted; checked: the splits exist, no class is empty, test's are train's."""
    if not root.is_dir():
        raise DataError(f"missing {root}: data.name names a folder of images by class ({root}/train/<class>/*, "
                        f"{root}/test/<class>/*)")
    out = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{root} has no {split}/ folder: put the images in {root}/{split}/<class>/ (a folder "
                            "per class)")
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"{folder} has no class folders: put each class's images in {folder}/<class>/")
        out[split] = {}
        for c in classes:
            files = sorted(p for p in c.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise DataError(f"{c} is empty: every class needs images (remove the folder, or add some)")
            out[split][c.name] = files
    extra = sorted(set(out["test"]) - set(out["train"]))
    if extra:
        raise DataError(f"{root}/test has class folder(s) {', '.join(extra)} that {root}/train lacks: every test "
                        "class needs training images")
    return out


def _read(root: Path, listing: dict[str, dict[str, list[Path]]]) -> dict[str, Arrays]:
    from PIL import Image, UnidentifiedImageError

    classes = {c: i for i, c in enumerate(listing["train"])}
    images: dict[str, list] = {s: [] for s in SPLITS}
    first = None
    for split in SPLITS:
        for c, files in listing[split].items():
            for path in files:
                try:
                    with Image.open(path) as im:
                        im.load()
                        img = im.copy()
                except (UnidentifiedImageError, OSError) as e:
                    raise DataError(f"{path} is not an image Pillow can read ({type(e).__name__}); remove it, or "
                                    "save it as PNG or JPEG") from None
                if first is None:
                    first = (path, img.size)
                elif img.size != first[1]:
                    raise DataError(f"{path} is {img.size[0]}x{img.size[1]} but {first[0]} is {first[1][0]}x"
                                    f"{first[1][1]}: resize the images to one size")
                images[split].append((img, classes[c]))
    gray = all(img.mode in ("L", "1") for s in SPLITS for img, _ in images[s])
    out = {}
    for split in SPLITS:
        x = np.stack([np.asarray(img.convert("L" if gray else "RGB"), np.uint8) for img, _ in images[split]])
        out[split] = (x[..., None] if gray else x, np.array([label for _, label in images[split]], np.int32))
    return out
