"""The study driver end to end on a tiny protocol: artifacts, report rebuilt from results alone, resume, bad input."""
import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from experiments import compare

ROOT = Path(__file__).resolve().parents[1]
RAW = Path(os.environ.get("JAXRES_RAW_DIR", ROOT.parent / "shared" / "datasets"))
pytestmark = pytest.mark.skipif(not (RAW / "mnist").is_dir(), reason=f"no datasets at {RAW}")
ARGS = ["--protocol", "tiny", "--raw-dir", str(RAW), "--no-progress", "--epochs", "2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert compare.main(ARGS + ["--out", str(out), "--models", "seed_cnn,seed_resnet",
                                "--datasets", "mnist,cifar10"]) == 0
    return out


def test_every_artifact_exists_and_parses(study):
    runs = sorted(p.parent.name for p in study.glob("*/results.json"))
    assert runs == ["cifar10_seed_cnn_seed0", "cifar10_seed_resnet_seed0", "mnist_seed_cnn_seed0",
                    "mnist_seed_resnet_seed0"]
    for r in runs:
        res = json.loads((study / r / "results.json").read_text())
        assert len(res["history"]) == 2 and res["final"] == res["history"][-1]
        assert res["final"]["test_examples"] == 200 and 0 <= res["final"]["test_accuracy"] <= 1
        assert {"jax", "flax", "backend", "device_count"} <= set(res["environment"])
    rows = list(csv.DictReader((study / "summary.csv").open()))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"seed_cnn", "seed_resnet"}
    md = (study / "summary.md").read_text()
    assert "| mnist | seed_resnet |" in md and "0.9874" in md  # the seed study's number beside ours
    for d in ("mnist", "cifar10"):
        png = (study / f"curves_{d}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "curves_mnist.png" in (study / "report.md").read_text()
    from tensorboard_events import read_scalars

    scalars = read_scalars(study / "tensorboard" / "mnist_seed_cnn_seed0")
    assert set(scalars) >= {"accuracy/test", "accuracy/train", "loss/test", "loss/train", "grad_norm"}
    assert [step for step, _ in scalars["accuracy/test"]] == [1, 2]


def test_report_rebuilt_from_results_alone(study, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for r in study.glob("*/results.json"):  # results only: no checkpoints, no data
        (copy / r.parent.name).mkdir()
        shutil.copy(r, copy / r.parent.name / "results.json")
    assert compare.main(["--report-only", str(copy)]) == 0
    assert (copy / "summary.md").read_text() == (study / "summary.md").read_text()
    assert (copy / "report.md").exists() and (copy / "curves_cifar10.png").exists()


def test_interrupted_study_continues_where_it_stopped(study, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(study, out)
    run = out / "mnist_seed_resnet_seed0"
    before = json.loads((run / "results.json").read_text())
    (run / "results.json").unlink()                  # as if killed during epoch 2 ...
    shutil.rmtree(run / "checkpoints" / "2")         # ... after epoch 1's checkpoint
    capsys.readouterr()
    assert compare.main(ARGS + ["--out", str(out), "--models", "seed_cnn,seed_resnet",
                                "--datasets", "mnist,cifar10"]) == 0
    text = "".join(capsys.readouterr())
    assert text.count("not trained again") == 3 and "resuming after epoch 1" in text
    after = json.loads((run / "results.json").read_text())
    strip = lambda h: [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in h]
    assert strip(after["history"]) == strip(before["history"])


@pytest.mark.parametrize("argv, message", [
    (["--models", "seed_cnn,resnet21"], "unknown model 'resnet21'"),
    (["--datasets", "imagenet"], "unknown dataset 'imagenet'"),
    (["--protocol", "fast"], "argument --protocol: invalid choice: 'fast'"),
    (["--seeds", "1,x"], "--seeds takes comma-separated integers"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert compare.main(argv + ["--out", str(tmp_path), "--raw-dir", str(RAW)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_missing_raw_dir_and_unwritable_output(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXRES_RAW_DIR", raising=False)
    assert compare.main(["--out", str(tmp_path / "o"), "--raw-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "train-images-idx3-ubyte.gz" in err and len(err.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert compare.main(["--out", str(blocker / "sub"), "--raw-dir", str(RAW)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not writable" in err and len(err.splitlines()) == 1


def test_a_finished_run_with_another_config_is_refused(study, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(study, out)
    assert compare.main(ARGS + ["--out", str(out), "--models", "seed_cnn", "--datasets", "mnist", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "different config (lr: 0.001 there, 0.01 asked)" in err
    assert (out / "mnist_seed_cnn_seed0" / "results.json").exists()  # nothing finished is lost
