"""Your network against its plain twin, on your own images: the example of docs/studies.md ("Bring your own").

    python examples/make_image_folder.py --raw-dir ../shared/datasets
    python -m experiments.compare --study examples/folder_study.py --out runs/example
    python -m experiments.compare --study examples/folder_study.py:tiny --out /tmp/example   # a quick check

The networks are my_networks.py's, beside this file (its folder is put on sys.path): the same residual network in
Flax Linen and in Flax NNX, each with its plain twin. The data is the folder make_image_folder.py writes (another
with --set data.name=DIR). jaxres reads the image shape, the classes and the split sizes from the folder.
"""
from pathlib import Path

from jaxres import config

FOLDER = Path(__file__).resolve().parent / "cifar10_folder"
MODELS = ("my_networks:linen", "my_networks:linen_plain", "my_networks:nnx_net", "my_networks:nnx_plain")
SCALES = {"full": {"epochs": 10, "seeds": (0, 1, 2), "train_subset": None, "test_subset": None},  # every image
          "tiny": {"epochs": 1, "seeds": (0,), "train_subset": 1000, "test_subset": 500}}  # a check


def get_study(arg: str = "full") -> config.Study:
    if arg not in SCALES:
        raise ValueError(f"folder_study.py:{arg}: choose one of {', '.join(SCALES)}")
    scale = SCALES[arg]
    base = config.RunConfig(
        data=config.DataConfig(name=str(FOLDER), batch_size=64, eval_batch_size=200, preprocess="standardize",
                               augment=True, train_subset=scale["train_subset"], test_subset=scale["test_subset"]),
        optimizer=config.OptimizerConfig(name="adam", lr=1e-3), epochs=scale["epochs"])
    return config.Study(name=f"folder_example_{arg}", description="a user's network (Linen and NNX) against its "
                        "plain twin, on a folder of images", base=base,
                        axes=(("model.name", MODELS), ("seed", scale["seeds"])))
