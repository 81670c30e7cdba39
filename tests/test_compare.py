"""The study driver end to end on synthetic files: artifacts, a swept key as its own rows, the report rebuilt
from results alone, resume, divergence, concurrent processes, bad input."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import compare
from jaxres import config, conv, results

ROOT = Path(__file__).resolve().parents[1]


def args(raw_dir, *extra):
    return ["--study", "tiny", "--raw-dir", str(raw_dir), "--no-progress", "--epochs", "2", "--devices", "1", *extra]


STUDY = ("--models", "seed_cnn", "--datasets", "mnist", "--sweep", "optimizer.lr=0.001,0.002")


@pytest.fixture(scope="session")
def study(tmp_path_factory, raw_dir):
    out = tmp_path_factory.mktemp("study")
    assert compare.main(args(raw_dir, *STUDY, "--out", str(out))) == 0
    return out


def strict_json(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token} in {path}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_every_artifact_exists_and_parses(study):
    runs = sorted(p.parent.name for p in study.glob("*/results.json"))
    assert len(runs) == 2 and {r.split("_seed0")[0] for r in runs} == {"mnist_seed_cnn"}
    for r in runs:
        res = strict_json(study / r / "results.json")
        assert res["run"] == r and res["study"] == "tiny" and res["schema"] == 2
        assert res["config"]["optimizer"]["lr"] in (0.001, 0.002) and res["config"]["epochs"] == 2
        assert res["identity"] == config.identity(config.from_dict(res["config"]))
        assert not set(res["identity"]) & {"epochs", "layer_norms_every", "parallel"}
        assert "keep_memory" not in res["identity"]["compute"] and res["identity"]["optimizer"]["b2"] == 0.999
        assert res["config"]["parallel"] == "jit"
        assert len(res["history"]) == 2 and res["final"] == res["history"][-1] and res["diverged"] is None
        assert res["final"]["test_examples"] == 200 and 0 <= res["final"]["test_accuracy"] <= 1
        env = res["environment"]
        assert {"jax", "flax", "backend", "device_count"} <= set(env) and env["conv_backend"] in conv.BACKENDS
        assert env["conv_backend_note"].startswith(env["conv_backend"])
        from jaxres import onednn  # the oneDNN version the convolutions ran on, None where they ran in XLA

        assert env["onednn"] == (onednn.version() if env["conv_backend"] == "onednn" else env["onednn"])
        assert env["conv_backend"] != "onednn" or env["onednn"] in env["conv_backend_note"]
        assert strict_json(study / r / "config.json") == res["identity"]
        names, layers = results.load_layer_norms(study / r / results.LAYER_FILE)  # every 10th of 2 x 2 steps
        assert names == ["conv0", "conv1", "conv2", "conv3", "conv4", "head"] and list(layers["steps"]) == [0]
    png = (study / "curves_mnist.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = (study / "report.md").read_text()
    assert "curves_mnist.png" in report and "`optimizer.name=adam`" in report and "conv_backend" in report
    assert "layer_grads_mnist.png" in report and (study / "layer_grads_mnist.png").read_bytes()[:4] == b"\x89PNG"
    assert f"layers_{runs[0]}.png" in report
    from tensorboard_events import read_scalars

    scalars = read_scalars(study / "tensorboard" / runs[0])
    assert set(scalars) >= {"accuracy/test", "accuracy/train", "loss/test", "loss/train", "grad_norm"}
    assert [step for step, _ in scalars["accuracy/test"]] == [1, 2]
    assert [step for step, _ in scalars["layer_grad_norm/conv0"]] == [0] and "layer_update_ratio/head" in scalars
    # per step (0-based over the run, as the layer norms): the training loss and the learning rate that step used
    res = strict_json(study / runs[0] / "results.json")
    losses = scalars["step/train_loss"]
    assert [step for step, _ in losses] == [0, 1, 2, 3]
    assert scalars["step/learning_rate"] == [(s, pytest.approx(res["config"]["optimizer"]["lr"])) for s in range(4)]
    for e, row in enumerate(res["history"]):  # two equal batches an epoch: the epoch's loss is their steps' mean
        assert (losses[2 * e][1] + losses[2 * e + 1][1]) / 2 == pytest.approx(row["train_loss"], rel=1e-5)


def test_two_values_of_a_key_give_two_rows_never_pooled(study):
    rows = list(csv.DictReader((study / "summary.csv").open()))
    assert len(rows) == 2 and all(r["seeds"] == "1" for r in rows)
    assert sorted((r["dataset"], r["config.optimizer.lr"]) for r in rows) == [("mnist", "0.001"), ("mnist", "0.002")]
    md = (study / "summary.md").read_text()
    assert md.splitlines()[0].startswith("| dataset | model | optimizer.lr | seeds | epochs |")
    assert "| mnist | seed_cnn | 0.002 | 1 | 2 |" in md and "0.9848" in md  # the seed study's number beside ours


def test_report_rebuilt_from_results_alone(study, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for r in study.glob("*/results.json"):  # results only: no checkpoints, no data
        (copy / r.parent.name).mkdir()
        shutil.copy(r, copy / r.parent.name / "results.json")
    assert compare.main(["--report-only", str(copy)]) == 0
    assert (copy / "summary.md").read_text() == (study / "summary.md").read_text()
    assert (copy / "report.md").exists() and (copy / "curves_mnist.png").exists()


def test_no_report_trains_only_and_report_only_builds_it_later(study, tmp_path, raw_dir, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    made = [p for p in copy.iterdir() if p.is_file()]
    assert {"report.md", "summary.md", "curves_mnist.png"} <= {p.name for p in made}
    for p in made:
        p.unlink()
    assert compare.main(args(raw_dir, *STUDY, "--out", str(copy), "--no-report")) == 0  # both runs already done
    assert "2 of 2 runs done" in capsys.readouterr().out and not [p for p in copy.iterdir() if p.is_file()]
    assert compare.main(["--report-only", str(copy)]) == 0
    assert (copy / "summary.md").read_text() == (study / "summary.md").read_text()


def test_a_damaged_results_file_is_skipped_by_the_report_and_rebuilt_by_a_rerun(study, tmp_path, raw_dir, capsys):
    out = tmp_path / "study"
    shutil.copytree(study, out)
    run = sorted(out.glob("mnist_*/results.json"))[0]
    before = json.loads(run.read_text())
    run.write_text(run.read_text()[:100])  # truncated
    capsys.readouterr()
    assert compare.main(["--report-only", str(out)]) == 3  # the report leaves that run out, and says so
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "results.json: unreadable (JSONDecodeError)" in err
    assert len(err.strip().splitlines()) == 2 and f"leaves out 1 unfinished run(s): {run.parent.name}: results.json " \
        "damaged (saved up to epoch 2)" in err
    assert len(list(csv.DictReader((out / "summary.csv").open()))) == 1
    capsys.readouterr()
    assert compare.main(args(raw_dir, *STUDY, "--out", str(out))) == 0
    text = "".join(capsys.readouterr())
    assert "is damaged: unreadable (JSONDecodeError); the run is rebuilt from its checkpoints" in text and text.count("not trained again") == 1
    assert "already trained for 2 epochs" in text
    after = json.loads(run.read_text())
    strip = lambda h: [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in h]
    assert strip(after["history"]) == strip(before["history"])


def test_interrupted_study_continues_where_it_stopped(study, tmp_path, raw_dir, capsys):
    out = tmp_path / "study"
    shutil.copytree(study, out)
    run = sorted(out.glob("mnist_*"))[1]
    before = json.loads((run / "results.json").read_text())
    (run / "results.json").unlink()                  # as if killed during epoch 2 ...
    shutil.rmtree(run / "checkpoints" / "2")         # ... after epoch 1's checkpoint
    capsys.readouterr()
    assert compare.main(args(raw_dir, *STUDY, "--out", str(out))) == 0
    text = "".join(capsys.readouterr())
    assert text.count("not trained again") == 1 and "resuming after epoch 1" in text
    after = json.loads((run / "results.json").read_text())
    strip = lambda h: [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in h]
    assert strip(after["history"]) == strip(before["history"])


def test_a_diverging_run_is_stopped_marked_and_the_study_goes_on(raw_dir, tmp_path, capsys):
    out = tmp_path / "div"
    argv = args(raw_dir, "--models", "seed_cnn", "--datasets", "mnist", "--optimizer", "sgd", "--set",
                "optimizer.momentum=0", "--sweep", "optimizer.lr=1e30,0.01", "--out", str(out))
    assert compare.main(argv) == 1
    err = capsys.readouterr().err
    assert "compare: 1 run(s) diverged: mnist_seed_cnn_seed0_" in err and "at step" in err
    assert "NaN or Inf" not in err  # tensorboardX's per-value lines: the divergence line says it once
    results = [strict_json(p) for p in out.glob("*/results.json")]  # strict JSON: null where non-finite
    bad = [r for r in results if r["diverged"]]
    good = [r for r in results if not r["diverged"]]
    assert len(bad) == 1 and len(good) == 1 and len(good[0]["history"]) == 2
    assert bad[0]["diverged"]["epoch"] == 1 and bad[0]["final"]["test_accuracy"] is None
    run_dir = out / bad[0]["run"]
    assert not (run_dir / "checkpoints").exists() or not any(p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())
    md = (out / "summary.md").read_text()
    assert "| diverged |" in md.splitlines()[0] and "| 1/1 |" in md and "| diverged | diverged |" in md
    assert "## Runs that diverged" in (out / "report.md").read_text()
    from tensorboard_events import read_scalars

    scalars = read_scalars(out / "tensorboard" / bad[0]["run"])  # the diverged epoch's 2 steps: finite values only
    assert [s for s, _ in scalars["step/learning_rate"]] == [0, 1]
    losses = dict(scalars["step/train_loss"])
    assert set(losses) < {0, 1} and all(map(math.isfinite, losses.values()))  # the non-finite one is left out
    assert compare.main(argv) == 1  # a rerun does not train it again
    assert "finished earlier (2 epochs, diverged at step" in capsys.readouterr().out


LOCK_HOLDER = """
import sys, time
from jaxres.checkpoint import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_run_held_by_another_process_is_skipped_and_a_dead_ones_lock_taken_over(raw_dir, tmp_path, capsys):
    from jaxres import config

    out = tmp_path / "locked"
    argv = args(raw_dir, "--models", "seed_cnn", "--datasets", "cifar10", "--seeds", "0,1", "--epochs", "1",
                "--out", str(out))
    held = config.run_name(config.get_study("tiny").set("data.name", "cifar10").set("model.name", "seed_cnn")
                           .set("seed", 1).runs()[0])
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out / held)], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert compare.main(argv) == 0
        text = capsys.readouterr().out
        assert f"{held}: {held} is being trained by pid {holder.pid} on" in text and "; skipped" in text
        assert "1 of 2 runs done" in text and "--report-only" in text
        assert not (out / held / "results.json").exists() and not (out / held / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert compare.main(argv) == 0  # the holder was killed: its lock is taken over, the run trained
    text = capsys.readouterr().out
    assert f"{held}: took over the lock left by pid {holder.pid}" in text and "2 of 2 runs done" in text
    assert (out / held / "results.json").exists() and (out / "curves_cifar10.png").exists()


@pytest.mark.slow
def test_two_processes_on_one_output_folder_share_the_runs(raw_dir, tmp_path):
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "experiments.compare", *args(raw_dir, "--models", "seed_cnn,seed_resnet",
                                                                "--datasets", "mnist", "--out", str(out))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "".join(o[0] + o[1] for o in outs)
    assert "Traceback" not in text
    assert text.count("epoch 2/2: train") == 2  # each run trained once, by one of the two
    assert len(list(out.glob("*/results.json"))) == 2 and not list(out.glob("*/checkpoints/*.orbax-checkpoint-tmp*"))


def test_dry_run_and_list_keys_show_the_study(raw_dir, capsys):
    assert compare.main(["--study", "quick", "--sweep", "optimizer.lr=0.1,0.01", "--set", "optimizer.name=sgd",
                         "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "study quick: 12 runs" in text and "optimizer.lr=0.01" in text and "model.name=seed_plain_twin" in text
    assert compare.main(["--study", "quick", "--list-keys"]) == 0
    text = capsys.readouterr().out
    assert "model.name = ['seed_cnn', 'seed_resnet', 'seed_plain_twin']  (axis)" in text
    assert "\nepochs = 3\n" in text and "optimizer.lr = 0.001" in text
    assert compare.main(["--study", "seed", "--list-keys"]) == 0
    assert "epochs = {'mnist': 30, 'cifar10': 100}  (per dataset; any other: its own)" in capsys.readouterr().out


def test_tied_axes_from_the_command_line(capsys):
    assert compare.main(["--study", "tiny", "--datasets", "mnist", "--models", "seed_cnn", "--sweep",
                         "optimizer.name,optimizer.lr=adam,0.001;sgd,0.1", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "study tiny: 2 runs" in text and "optimizer.name=sgd optimizer.lr=0.1" in text
    assert compare.main(["--study", "norm_opt", "--list-keys"]) == 0
    text = capsys.readouterr().out
    assert "optimizer.lr = [0.001, 0.001, 0.01]  (axis, tied to optimizer.name, optimizer.weight_decay)" in text


@pytest.mark.parametrize("argv, message", [
    (["--models", "seed_cnn,resnet21"], "model.name='resnet21' is not one of seed_cnn"),
    (["--datasets", "imagenet"], "data.name='imagenet' is not one of"),
    (["--study", "fast"], "unknown study 'fast'; choose one of seed, "),
    (["--seeds", "1,x"], "seed='x' must be an integer"),
    (["--seeds=-1"], "seed=-1 must be >= 0"),
    (["--seeds", "99999999999999999999"], "seed=99999999999999999999 must be >= 0 and <= 2147483647"),
    (["--epochs", "0"], "epochs=0 must be >= 1"),
    (["--epochs", "-1"], "epochs=-1 must be >= 1"),
    (["--train-subset", "0"], "data.train_subset=0 must be >= 1"),
    (["--test-subset=-9700"], "data.test_subset=-9700 must be >= 1 and <= 10000"),
    (["--lr", "nan"], "optimizer.lr=nan must be a finite number"),
    (["--lr", "inf"], "optimizer.lr=inf must be a finite number"),
    (["--lr", "0"], "optimizer.lr=0.0 must be > 0"),
    (["--lr", "-1"], "optimizer.lr=-1.0 must be > 0"),
    (["--batch-size", "0"], "data.batch_size=0 must be >= 1"),
    (["--batch-size", "300"], "data.batch_size=300 is larger than the 256 training examples of mnist"),
    (["--batch-size", "6"], "data.batch_size=6 is not a multiple of the 4 devices used"),
    (["--devices", "5"], "--devices must be between 1 and the 4 local devices, got 5"),
    (["--set", "optimizer.lrr=0.1"], "unknown config key 'optimizer.lrr'; did you mean optimizer.lr?"),
    (["--set", "optimizer.lr"], "--set takes KEY=VALUE, got 'optimizer.lr'"),
    (["--sweep", "model.norm=batch,weird"], "model.norm='weird' is not one of none, batch, group, layer"),
    (["--keep", "0"], "--keep must be at least 1"),
    (["--set", "compute.precision=bf16"], "compute.precision='bf16' is not one of float32, bfloat16"),
    (["--sweep", "compute.precision=float32,float16"], "compute.precision='float16' is not one of float32, bfloat16"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys, raw_dir):
    out = tmp_path / "out"
    assert compare.main(argv + ["--out", str(out), "--raw-dir", str(raw_dir), "--study", "tiny"]
                        if "--study" not in argv else argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # checked before anything is written


def test_missing_raw_dir_and_unwritable_output(tmp_path, capsys, monkeypatch, raw_dir):
    monkeypatch.delenv("JAXRES_RAW_DIR", raising=False)
    assert compare.main(["--out", str(tmp_path / "o"), "--raw-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "train-images-idx3-ubyte.gz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert compare.main(["--study", "tiny", "--out", str(blocker / "sub"), "--raw-dir", str(raw_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not writable" in err and len(err.splitlines()) == 1


def test_a_run_folder_with_another_config_is_refused(study, tmp_path, capsys, raw_dir):
    out = tmp_path / "study"
    shutil.copytree(study, out)
    run = sorted(out.glob("mnist_*"))[0]
    saved = json.loads((run / "config.json").read_text())
    saved["data"]["batch_size"] = 64  # as if written by another version with other defaults
    (run / "config.json").write_text(json.dumps(saved))
    (run / "results.json").unlink()
    assert compare.main(args(raw_dir, *STUDY, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "different config (data.batch_size: 64 there, 128 asked)" in err and len(err.strip().splitlines()) == 1
    assert (run / "checkpoints").exists()  # nothing finished is lost


@pytest.mark.slow
def test_gpu_depth_script_dry_run_writes_the_depth_report(raw_dir, tmp_path):
    """experiments/gpu_depth.sh at a tiny size on the CPU: the depth preset end to end, its results copied out."""
    env = dict(os.environ, DRY_RUN="1", MODELS="plain20,plain32,resnet20", SEEDS="0", PYTHON=sys.executable,
               RAW=str(raw_dir), RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", "experiments/gpu_depth.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    assert len(list(out.glob("cifar10_*/results.json"))) == 3 and not list(out.glob("*/checkpoints"))
    report = (out / "report.md").read_text()
    assert "## Depth: He et al.'s degradation experiment" in report and "| cifar10 | 32 |" in report
    assert (out / "depth_curves_cifar10.png").exists() and (out / "depth_error_cifar10.png").exists()
    run = json.loads(next(out.glob("cifar10_plain32_*/results.json")).read_text())
    assert run["config"]["optimizer"]["name"] == "sgd" and run["config"]["data"]["augment"] is True
    assert run["environment"]["conv_backend"] in ("onednn", "xla", "xla-swapped")


def test_a_validation_split_chooses_the_best_epoch_and_early_stopping_ends_the_run(raw_dir, tmp_path, capsys):
    """Issue 36: data.validation holds the last N training examples out; they are evaluated every epoch, choose the
    best epoch (results.json "best", the summary, the convergence table) and drive early stopping (patience)."""
    out = tmp_path / "out"
    base = ["--study", "tiny", "--raw-dir", str(raw_dir), "--models", "seed_cnn", "--datasets", "mnist",
            "--devices", "1", "--no-progress", "--out", str(out), "--train-subset", "256", "--batch-size", "32",
            "--set", "data.validation=64", "--set", "data.eval_batch_size=64"]
    assert compare.main([*base, "--epochs", "3"]) == 0
    (path,) = out.glob("*/results.json")
    res = json.loads(path.read_text())
    assert all(h["validation_examples"] == 64 and h["train_examples"] == 192 and h["test_examples"] == 200
               for h in res["history"])
    best = max(res["history"], key=lambda h: (h["validation_accuracy"], -h["epoch"]))
    assert res["best"] == {"epoch": best["epoch"], "chosen_on": "validation", "train_accuracy": best["train_accuracy"],
                           "validation_accuracy": best["validation_accuracy"], "test_accuracy": best["test_accuracy"]}
    assert "val loss" in capsys.readouterr().out and res["stopped_early"] is None
    summary = (out / "summary.md").read_text()
    assert "| validation acc | test acc at the best validation epoch |" in summary
    assert f"{best['test_accuracy']:.4f}" in summary.splitlines()[2]
    assert "best-epoch test (chosen on validation)" in (out / "report.md").read_text()
    # early stopping: with a learning rate too small to move the weights, the validation accuracy never improves
    stop = [*base, "--epochs", "6", "--lr", "1e-12", "--set", "patience=2", "--out", str(tmp_path / "stop")]
    assert compare.main(stop) == 0
    assert "early stop: the validation accuracy has not improved on epoch 1's" in capsys.readouterr().out
    (path,) = (tmp_path / "stop").glob("*/results.json")
    res = json.loads(path.read_text())
    assert len(res["history"]) == 3 and res["stopped_early"] == {"epoch": 3, "best_epoch": 1, "patience": 2}
    assert res["best"]["epoch"] == 1 and res["config"]["patience"] == 2
    assert compare.main(stop) == 0  # the same command: finished, nothing trained
    assert "finished earlier" in capsys.readouterr().out
    assert compare.main([*stop[:-2], "--set", "data.validation=0", "--out", str(tmp_path / "x")]) == 2
    assert "patience=2 stops on the validation accuracy: hold out a validation split" in capsys.readouterr().err
