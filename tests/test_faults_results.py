"""Issue 49's reproduced misbehaviours, in the form of tests/test_faults.py: what a results file, an early stop, an
output path and the progress bar could still get wrong. Each test fails on the code before the fix."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import compare
from test_faults import argv

ROOT = Path(__file__).resolve().parents[1]
SEED_CPU = ROOT / "results" / "seed_cpu"


def _mnist_copy(tmp_path: Path) -> Path:
    """The committed seed_cpu campaign's MNIST runs (3 seeds of seed_cnn and seed_resnet), their files only."""
    copy = tmp_path / "seed_cpu"
    for run in sorted(SEED_CPU.glob("mnist_*")):
        shutil.copytree(run, copy / run.name)
    if len(list(copy.glob("*/results.json"))) != 6:
        pytest.skip("results/seed_cpu does not hold the six MNIST runs")
    return copy


def _claims(folder: Path) -> dict[str, dict]:
    with open(folder / "claims.csv") as f:
        return {(r["claim"], r["dataset"], r["a"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("damage, said", [
    ("nan", "it holds a bare NaN, which jaxres never writes (strict JSON): edited or damaged"),
    ("model", "its config is not one this jaxres can run (model.name='no_such_net' is not one of"),
])
def test_a_damaged_results_file_is_left_out_named_and_the_claims_say_which_seed_they_lack(damage, said, tmp_path,
                                                                                          capsys):
    """Case 1: a bare NaN (Python's json.dumps writes one) silently turned MNIST C3 from contradicted to not resolved.
    Case 2: a config naming a model that does not exist was pooled, and C1/C2 ran on 2 of 3 seeds unsaid."""
    copy = _mnist_copy(tmp_path)
    victim = sorted(copy.glob("mnist_seed_cnn_seed1_*"))[0]
    r = json.loads((victim / "results.json").read_text())
    if damage == "nan":
        r["history"][3]["test_accuracy"] = float("nan")
        r["final"]["train_loss"] = float("nan")
    else:
        r["config"]["model"]["name"] = "no_such_net"
    (victim / "results.json").write_text(json.dumps(r))  # json.dumps writes NaN bare
    capsys.readouterr()
    assert compare.main(["--report-only", str(copy)]) == 3  # a run of the folder is left out: not complete
    err = capsys.readouterr().err
    assert f"skipping {victim / 'results.json'}: {said}" in err and "Traceback" not in err
    assert f"{victim.name}: results.json damaged" in err
    summary = (copy / "summary.md").read_text()
    assert "no_such_net" not in summary and summary.count("| mnist | seed_cnn | 2 | 10 |") == 1, summary
    claims = _claims(copy)
    for claim in ("C1", "C2", "C3"):  # every claim of the pair says it ran on fewer seeds, and which
        row = claims[(claim, "mnist", "seed_cnn")]
        assert (row["n_a"], row["n_b"]) == ("2", "3")
        assert "on fewer seeds than the study ran (0, 1, 2): seed_cnn lacks seed 1" in row["why"], row["why"]


def test_report_only_on_a_study_whose_only_run_was_killed_names_it(raw_dir, tmp_path, capsys):
    """Case 3: it said "no finished runs (*/results.json)", exit 2, without naming the run folder; with two runs,
    one killed, the folder was named and the exit status was 3. Now both behave the same."""
    out = tmp_path / "out"
    assert compare.main(argv(raw_dir, out, epochs=1)) == 0
    (run,) = [p.parent for p in out.glob("*/results.json")]
    (run / "results.json").unlink()  # killed after its last save, before results.json was written
    capsys.readouterr()
    assert compare.main(["--report-only", str(out)]) == 3
    err = capsys.readouterr().err.strip()
    assert err == (f"compare: no report: no run has finished (1 started): {run.name}: not finished (saved up to "
                   "epoch 1); run the study's command again to finish them")


def test_an_early_stopped_run_says_so_wherever_its_epochs_are_counted(raw_dir, tmp_path, capsys):
    """Case 4: a run stopped early looked like a full one: "finished earlier (8 epochs, ...)", 8 in the summary's
    epochs column, nothing in report.md. Now the epochs trained and the stop are shown."""
    out = tmp_path / "out"
    # a learning rate too small to change any prediction: no better validation accuracy after epoch 1, so patience
    # 1 stops the run after epoch 2 on any CPU
    early = argv(raw_dir, out, "--lr", "1e-12", "--set", "patience=1", "--set", "data.validation=16", epochs=8)
    assert compare.main(early) == 0
    (path,) = out.glob("*/results.json")
    r = json.loads(path.read_text())
    assert len(r["history"]) == 2 and r["stopped_early"] == {"epoch": 2, "best_epoch": 1, "patience": 1}
    capsys.readouterr()
    assert compare.main(early) == 0
    said = capsys.readouterr().out
    assert ("finished earlier (stopped early after epoch 2 of 8: no better validation accuracy for 1 epochs after "
            "epoch 1;") in said and "(8 epochs" not in said
    assert compare.main(["--report-only", str(out)]) == 0
    assert "| 2 of 8, 1 of 1 seed stopped early |" in (out / "summary.md").read_text()
    report = (out / "report.md").read_text()
    assert "## Runs that stopped early" in report and f"- {path.parent.name}: stopped early after epoch 2 of 8" in report


def test_an_output_path_that_is_not_utf8_is_one_line_before_training(raw_dir, tmp_path, capsys, monkeypatch):
    """Case 7: `--out $'runs/bad\\xffname'` trained a whole epoch, then failed at the checkpoint save with a pybind11
    cast message, and every rerun repeated the lost epoch. Now the path is checked before training."""
    monkeypatch.chdir(tmp_path)
    bad = Path(__import__("os").fsdecode(b"runs/bad\xffname"))
    assert compare.main(argv(raw_dir, bad, epochs=1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare: error: --out 'runs/bad\\udcffname' is not valid UTF-8") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_dataset_rejected_before_training_leaves_no_run_folder(raw_dir, tmp_path, capsys):
    """Also seen: a dataset rejected before training (bad labels, a truncated gzip) left OUT/<run>/ holding only
    its .lock."""
    import synthetic

    bad = tmp_path / "raw"
    shutil.copytree(raw_dir, bad)
    (bad / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(synthetic._idx(np.full(60000, 12, np.uint8)))
    out = tmp_path / "out"
    assert compare.main(argv(bad, out, epochs=1)) == 2
    assert "label" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def test_bfloat16_without_avx512_bf16_is_said_on_every_backend(monkeypatch):
    """Also seen: compute.precision=bfloat16 on a CPU without AVX512_BF16 said nothing when the backend was not
    oneDNN; oneDNN's note ("gains nothing here") now has its equivalent on every backend."""
    import jax

    from jaxres import conv

    monkeypatch.setattr(conv, "_bf16_cpu", lambda: False)
    for backend in ("xla", "xla-swapped"):
        with conv.forced(backend):
            assert "bfloat16 on a CPU without AVX512_BF16: it gains nothing here" in conv.brief("bfloat16")
            assert "AVX512_BF16" not in conv.brief("float32")
    monkeypatch.setattr(conv, "_bf16_cpu", lambda: True)
    with conv.forced("xla"):
        assert conv.brief("bfloat16") == "xla"
    assert jax.default_backend() == "cpu"


def test_the_progress_bar_counts_steps_as_they_finish(monkeypatch):
    """Case 8: the bar counted steps as they were dispatched, so it ran ahead of the work (6/24 at 4 s, then 9 to 14
    in one second). Now each step waits for the one before it, one stays queued, and the bar counts finished ones."""
    import jax
    import jax.numpy as jnp

    from jaxres import train

    events = []

    class Bar:
        n = 0

        def __init__(self, *a, initial=0, **k):
            self.n = initial

        def update(self, k):
            self.n += k
            events.append(("bar", self.n))

        def set_postfix(self, **k):
            pass

        def close(self):
            pass

    class Source:
        steps_per_epoch = 4

        def train_batches(self, epoch, rng=None, start=0):
            return iter(range(start, 4))

    def step(state, batch, rng):
        events.append(("dispatch", batch))
        return state, {"loss_sum": jnp.float32(1.0), "correct": jnp.float32(1.0), "count": jnp.float32(1.0 + batch)}

    real_wait = jax.block_until_ready

    def wait(x):
        events.append(("wait", int(x) - 1))
        return real_wait(x)

    monkeypatch.setattr("tqdm.tqdm", Bar)
    monkeypatch.setattr(train.jax, "block_until_ready", wait)
    train.train_epoch(None, step, Source(), 0, train.Streams.from_seed(0), progress=True)
    assert events == [("dispatch", 0), ("dispatch", 1), ("wait", 0), ("bar", 1), ("dispatch", 2), ("wait", 1),
                      ("bar", 2), ("dispatch", 3), ("wait", 2), ("bar", 3), ("wait", 3), ("bar", 4)]
    assert sys.modules["tqdm"]  # the bar is tqdm's, replaced here to read it
