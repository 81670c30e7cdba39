"""Make a folder of images by class from the original CIFAR-10 files: OUT/train/<class>/*.png and
OUT/test/<class>/*.png, the layout of Keras's image_dataset_from_directory and torchvision's ImageFolder, so that the
example study (folder_study.py) trains on images as a user would bring them.

    python examples/make_image_folder.py --raw-dir ../shared/datasets            # examples/cifar10_folder/
    python examples/make_image_folder.py --raw-dir DIR --out /tmp/pets --classes cat,dog --train-per-class 100

The first N images of each class in file order, written as PNG (lossless: the pixels are CIFAR-10's).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# CIFAR-10's classes in label order (its batches.meta.txt)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_OUT = Path(__file__).resolve().parent / "cifar10_folder"


def make(raw_dir: str | None, out: Path, classes: tuple[str, ...] = CLASSES, train_per_class: int = 500,
         test_per_class: int = 100) -> dict[str, int]:
    """Write the folder; the number of images written per split."""
    import numpy as np
    from PIL import Image

    from jaxres import data

    written = {}
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        images, labels = data.load_raw("cifar10", split, raw_dir)
        written[split] = 0
        for name in classes:
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == CLASSES.index(name))[:n]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
                written[split] += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--raw-dir", help="the folder with cifar10/cifar-10-binary.tar.gz (default $JAXRES_RAW_DIR)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the folder goes (default {DEFAULT_OUT})")
    p.add_argument("--classes", default=",".join(CLASSES), help="comma-separated CIFAR-10 class names (default all)")
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100)
    args = p.parse_args(argv)
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown or not classes:
        p.error(f"--classes: {', '.join(unknown) or 'none given'} not among CIFAR-10's: {', '.join(CLASSES)}")
    if min(args.train_per_class, args.test_per_class) < 1:
        p.error("--train-per-class and --test-per-class must be >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"--out {args.out} is not empty: choose another folder, or remove it")
    from jaxres.errors import DataError

    try:
        written = make(args.raw_dir, args.out, classes, args.train_per_class, args.test_per_class)
    except DataError as e:
        print(f"make_image_folder: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {written['train']} training and {written['test']} test images of {len(classes)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
