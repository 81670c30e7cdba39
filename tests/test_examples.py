"""examples/ (issue 48): a folder of images made from the shared CIFAR-10 files, and a study file comparing a user's
network with its plain twin, written in Linen and in NNX, run at tiny scale as a user would run it."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import compare

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import make_image_folder  # noqa: E402


def test_the_example_folder_holds_cifar10s_pixels_by_class(real_raw_dir, tmp_path):
    from PIL import Image

    from jaxres import data

    out = tmp_path / "folder"
    assert make_image_folder.main(["--raw-dir", str(real_raw_dir), "--out", str(out), "--classes", "cat,ship",
                                   "--train-per-class", "3", "--test-per-class", "2"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cat", "ship"]
    images, labels = data.load_raw("cifar10", "test", real_raw_dir)
    first_ship = int(np.flatnonzero(labels == make_image_folder.CLASSES.index("ship"))[0])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "test" / "ship" / f"{first_ship:05d}.png")),
                                  images[first_ship])
    for argv in (["--out", str(out)], ["--out", str(tmp_path / "x"), "--classes", "cat,unicorn"]):
        with pytest.raises(SystemExit) as e:  # a folder that is not empty, a class CIFAR-10 lacks: refused
            make_image_folder.main(["--raw-dir", str(real_raw_dir), *argv])
        assert e.value.code == 2
    assert not (tmp_path / "x").exists()


def test_the_example_study_compares_linen_and_nnx_networks_with_their_twins(real_raw_dir, tmp_path, capsys):
    folder, out = tmp_path / "cifar10_folder", tmp_path / "out"
    assert make_image_folder.main(["--raw-dir", str(real_raw_dir), "--out", str(folder), "--train-per-class", "8",
                                   "--test-per-class", "4"]) == 0
    argv = ["--study", f"{EXAMPLES / 'folder_study.py'}:tiny", "--set", f"data.name={folder}", "--seeds", "0,1",
            "--train-subset", "80", "--test-subset", "40", "--out", str(out), "--no-progress"]
    assert compare.main(argv) == 0
    results = {r["config"]["model"]["name"]: r for r in
               (json.loads(p.read_text()) for p in out.glob("*/results.json"))}
    assert sorted(results) == ["my_networks:linen", "my_networks:linen_plain", "my_networks:nnx_net",
                               "my_networks:nnx_plain"]
    for name, r in results.items():
        twin = results[r["model_facts"]["twin"]]
        assert r["params"] == twin["params"] and twin["model_facts"]["twin"] == name  # twins: the same parameters
        assert r["data_facts"] | {"name": ""} == {"name": "", "format": "image-folder", "shape": [32, 32, 3],
                                                   "num_classes": 10, "num_train": 80, "num_test": 40}
        assert r["study_source"]["arg"] == "tiny" and r["final"]["test_examples"] == 40
    claims = (out / "claims.csv").read_text()
    for pair in ("my_networks:linen_plain,my_networks:linen", "my_networks:nnx_plain,my_networks:nnx_net"):
        assert f"C1,{folder},{{}},{pair},final test accuracy" in claims  # each network against its own twin
    # the layers of the NNX network, which Linen's interceptor cannot see, are in their numeric order
    layers = np.load(next(out.glob("*nnx_net_seed0*/layer_norms.npz")))["names"].tolist()
    assert [n for n in layers if "convs" in n][:3] == ["inner/convs/0", "inner/convs/1", "inner/convs/2"], layers
