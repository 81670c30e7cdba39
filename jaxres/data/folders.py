"""A user's images in a folder per class, the layout of Keras's ``image_dataset_from_directory``, torchvision's
``ImageFolder`` and tfds's ``ImageFolder``: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``, read with Pillow (no
TensorFlow). Classes are the training split's folder names in sorted order (label 0 the first); the examples of
each split are kept in one fixed shuffled order (``ORDER_SEED``), so subsets take every class; every image is one
size, or is resized to the size the config names (``data.image_size``, Pillow's bilinear filter); all grayscale
images stay one channel, otherwise every image becomes RGB.

The folder is read once and cached beside it (``DIR/.jaxres_cache/<size>-<key>.npz``, uint8 arrays that load in
a moment), the key a hash of every file's path, size and modification time and of the size asked for: a file
added, removed or changed makes a new cache (one kept per size). Every problem is one DataError naming the file
or folder and the fix, before anything is trained: no train/ or test/, an empty class folder, a test class the
training split lacks, a file that is not an image, images of several sizes without a resize.
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
# A folder lists its images class by class; each split is kept in one fixed shuffled order instead (a permutation
# seeded by ORDER_SEED, as Keras's image_dataset_from_directory shuffles), so that data.train_subset, data.test_subset
# and the data.validation hold-out (the last N training examples) take every class, not the first or last ones.
ORDER_SEED = 0
SPLITS = ("train", "test")


def read_folder(paths: list[Path], split: str, image_size: tuple[int, int] | None = None) -> Arrays:
    """The catalog format "image-folder": ``split``'s (uint8 images NHWC, int32 labels) of the folder, every image
    resized to ``image_size`` (H, W) where it is given."""
    return folder_arrays(paths[0], image_size)[split]


def folder_arrays(root: Path, image_size: tuple[int, int] | None = None) -> dict[str, Arrays]:
    """Both splits of the folder ``root``, from its cache where the cache matches the folder's files and the size."""
    listing = _listing(Path(root))
    size = None if image_size is None else tuple(image_size)
    files = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
             for split in SPLITS for listed in listing[split].values() for p in listed]
    key = hashlib.sha256(json.dumps([size, ORDER_SEED, files]).encode()).hexdigest()[:20]
    return _arrays(Path(root), key, size)


@functools.lru_cache(maxsize=2)
def _arrays(root: Path, key: str, size: tuple[int, int] | None) -> dict[str, Arrays]:
    label = "native" if size is None else f"{size[0]}x{size[1]}"
    cache = root / CACHE / f"{label}-{key}.npz"  # one cache per size asked for
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return {s: (f[f"x_{s}"], f[f"y_{s}"]) for s in SPLITS}
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache: read the folder again and write it anew
    out = _read(root, _listing(root), size)
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{f"{k}_{s}": a for s, (x, y) in out.items() for k, a in (("x", x), ("y", y))})
        tmp.replace(cache)
        for stale in cache.parent.glob(f"{label}-*.npz"):  # of the folder as it was: it will never match again
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


def _read(root: Path, listing: dict[str, dict[str, list[Path]]], size: tuple[int, int] | None) -> dict[str, Arrays]:
    from PIL import Image, UnidentifiedImageError

    classes = {c: i for i, c in enumerate(listing["train"])}
    images: dict[str, list] = {s: [] for s in SPLITS}
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
                if size is None and images["train"] and img.size != images["train"][0][0].size:
                    (w, h), (w0, h0), first = img.size, images["train"][0][0].size, images["train"][0][2]
                    raise DataError(f"{path} is {w}x{h} but {first} is {w0}x{h0}: resize the images to one size, or "
                                    f"set data.image_size (e.g. data.image_size={h0})")
                images[split].append((img, classes[c], path))
    gray = all(img.mode in ("L", "1") for s in SPLITS for img, _, _ in images[s])
    out = {}
    for split in SPLITS:
        pixels = [img.convert("L" if gray else "RGB") for img, _, _ in images[split]]
        if size is not None:  # PIL sizes are (width, height)
            pixels = [p if p.size == size[::-1] else p.resize(size[::-1], Image.BILINEAR) for p in pixels]
        x = np.stack([np.asarray(p, np.uint8) for p in pixels])
        y = np.array([label for _, label, _ in images[split]], np.int32)
        order = np.random.default_rng(ORDER_SEED).permutation(len(y))  # classes mixed: see ORDER_SEED
        out[split] = ((x[..., None] if gray else x)[order], y[order])
    return out
