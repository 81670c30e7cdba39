"""experiments.campaign (named queues of runs over sessions: seed_cpu, depth_full_cpu) and the results committed
under results/."""
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import campaign

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "results"


def test_the_queue_is_issue_34s_order_with_the_compute_settings_fixed(capsys):
    assert campaign.main(["--out", "o", "--results", "r", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = [(ln.split("--datasets ")[1].split()[0], ln.split("--models ")[1].split()[0],
                int(ln.split("--seeds ")[1].split()[0])) for ln in lines]
    assert entries[:3] == [("cifar10", "seed_cnn", 0), ("cifar10", "seed_resnet", 0), ("cifar10", "seed_plain_twin", 0)]
    assert entries[3:7] == [("cifar10", m, s) for s in (1, 2) for m in ("seed_cnn", "seed_resnet")]
    assert entries[7:9] == [("cifar10", "seed_plain_twin", 1), ("cifar10", "seed_plain_twin", 2)]
    assert entries[9:] == [("mnist", m, s) for s in (0, 1, 2) for m in ("seed_cnn", "seed_resnet")]
    assert len(set(entries)) == len(entries) == 15
    for ln in lines:  # one study, one folder, the same fixed settings, no report per run
        assert "--study seed_cpu" in ln and "--out o" in ln and "--no-report" in ln
        assert all(f"--set {s}" in ln for s in campaign.COMPUTE)


def _entries(lines: list[str]) -> list[tuple[str, str, int]]:
    return [(ln.split("--datasets ")[1].split()[0], ln.split("--models ")[1].split()[0],
             int(ln.split("--seeds ")[1].split()[0])) for ln in lines]


def test_the_depth_queue_is_issue_47s_order_on_its_own_preset(capsys):
    assert campaign.main(["--campaign", "depth_full_cpu", "--out", "o", "--results", "r", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    four = ["resnet20", "resnet56", "plain20", "plain56"]
    assert _entries(lines) == [("cifar10", m, s) for s in (0, 1, 2) for m in four] + [
        ("cifar10", "resnet110", 0), ("cifar10", "plain110", 0)]
    assert all("--study depth_full_cpu" in ln and "--no-report" in ln for ln in lines)
    assert all(ln.endswith("--keep-epochs 1,2,4,8,16") for ln in lines)  # for the shattering probe (its --epochs)
    from jaxres import config

    runs = config.get_study("depth_full_cpu").runs()
    names = {config.run_name(r) for r in runs}
    args, queue = campaign._arguments(["--campaign", "depth_full_cpu", "--out", "o", "--results", "r"])
    assert {campaign.run_name(e, args) for e in queue} <= names  # every entry is one of the preset's runs
    cfg = runs[0]  # the protocol of issue 47, read back from the preset
    assert (cfg.data.name, cfg.data.train_subset, cfg.data.test_subset, cfg.data.augment, cfg.data.preprocess) == (
        "cifar10", None, None, True, "standardize")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay,
            cfg.data.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (cfg.schedule.name, cfg.schedule.warmup_steps, cfg.schedule.decay_steps, cfg.schedule.final_fraction,
            cfg.epochs) == ("cosine", 2 * 390, None, 0.0, 30)
    assert (cfg.compute.precision, cfg.compute.conv, cfg.compute.overlap_grads) == ("float32", "onednn", False)
    assert {r.model.name for r in runs} == {f"{k}{d}" for k in ("plain", "resnet") for d in (20, 56, 110)}
    assert {r.model.shortcut for r in runs} == {None}  # the presets' own: option A for resnet, none for plain


@pytest.mark.parametrize("argv, message", [
    (["--study", "bogus"], "unknown study 'bogus'"),
    (["--study", "bogus", "--dry-run"], "unknown study 'bogus'"),
    (["--limit", "-1"], "--limit -1"),
    (["--limit", "0", "--dry-run"], "--limit 0"),
    (["--jobs", "0"], "--jobs 0"),
    (["--jobs", "999"], "--jobs 999"),
])
def test_bad_campaign_arguments_are_one_line(argv, message, tmp_path, capsys):
    """Issue 49, case 6: a bad --study gave a traceback (and --dry-run printed the queue); --limit -1 queued 14."""
    assert campaign.main(["--out", str(tmp_path / "o"), "--results", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_a_results_folder_that_cannot_take_files_is_refused_before_training(tmp_path, capsys):
    """Issue 49, case 6: --results naming a file gave FileExistsError, an unwritable one a PermissionError after a
    run had trained."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    for results, message in ((blocker, "is a file"), (blocker / "sub", "is not writable")):
        assert campaign.main(["--out", str(tmp_path / "o"), "--results", str(results), "--limit", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing trained


def test_a_machine_without_onednn_is_told_what_to_do_before_the_first_entry(tmp_path, capsys, monkeypatch):
    """Issue 49, case 5: every entry failed with "backend 'onednn' is unavailable", then "run the same command"."""
    monkeypatch.setattr(campaign, "ONEDNN_PROBE", "print('no extension here'); raise SystemExit(1)")
    assert campaign.main(["--out", str(tmp_path / "o"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no extension here" in err and "make install" in err and "another --results" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()



def test_a_dry_run_whose_reader_stops_ends_quietly():
    """`campaign --dry-run | head -1` gave a BrokenPipeError traceback: a reader that stops early is no error."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line, as head has after its first
    try:
        done = subprocess.run([sys.executable, "-m", "experiments.campaign", "--out", "o", "--results", "r",
                               "--dry-run"], cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def _claims(folder: Path) -> list[dict]:
    with open(folder / "claims.csv") as f:
        return list(csv.DictReader(f))


def _check_report_from_copy(results: Path, tmp: Path) -> None:
    """--report-only on a copy of a results folder: the claims rows agree with the results files they come from."""
    copy = tmp / results.name
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("*.png", "*.md", "*.csv"))
    assert not [p for p in copy.rglob("checkpoints") if campaign.PARKED not in p.relative_to(copy).parts], \
        "results/ keeps no checkpoints but an unfinished run's parked saves"
    out = subprocess.run([sys.executable, "-m", "experiments.compare", "--report-only", str(copy)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    parked = sorted(p.name for p in (copy / campaign.PARKED).glob("*"))  # unfinished runs carried to a new machine
    assert out.returncode == (3 if parked else 0), out.stderr[-2000:]  # 3: the report names runs it leaves out
    assert all(f"{name}: not finished (saved up to epoch" in out.stderr for name in parked), out.stderr[-2000:]
    from jaxres.config import flatten

    runs = [json.loads(p.read_text()) for p in copy.glob("*/results.json")]
    runs = [(flatten(r["config"]), r["final"]["test_accuracy"]) for r in runs if not r.get("diverged")]
    assert (copy / "summary.md").is_file() and (copy / "report.md").is_file()
    models = {(flat["data.name"], flat["model.name"]) for flat, _ in runs}
    if not any((d, "seed_cnn") in models and (d, "seed_resnet") in models for d, _ in models):
        return
    rows = [r for r in _claims(copy) if r["claim"] == "C1"]
    assert rows
    for row in rows:  # each setting's C1: its own runs' mean test accuracies, one verdict rule
        setting = json.loads(row["setting"])
        mine = lambda model: [acc for flat, acc in runs if flat["model.name"] == model  # noqa: E731
                              and flat["data.name"] == row["dataset"]
                              and all(flat.get(k) == v for k, v in setting.items())]
        a, b = mine(row["a"]), mine(row["b"])
        assert float(row["ours_a"]) == pytest.approx(statistics.mean(a))
        assert float(row["ours_b"]) == pytest.approx(statistics.mean(b))
        assert row["verdict"] == "not resolved" if min(len(a), len(b)) < 2 else row["verdict"] in (
            "holds", "contradicted", "not resolved")
        claims_here = {r["claim"] for r in _claims(copy) if r["setting"] == row["setting"]}
        assert claims_here >= {"C1", "C2", "C3"} | ({"C4"} if row["dataset"] == "cifar10" else set())  # C4: CIFAR-10


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_finished_run_is_kept_in_the_results_folder_and_reported_from_it_alone(tmp_path, jobs):
    """Two tiny runs, one after the other or side by side (--jobs 2: a CPU and one OpenMP thread each, output in
    OUT/logs): each one's config, results and layer norms copied as it finishes, the report rebuilt."""
    if not (RAW / "cifar10").is_dir():
        pytest.skip(f"no CIFAR-10 files in {RAW}")
    if len(os.sched_getaffinity(0)) < jobs:
        pytest.skip(f"--jobs {jobs} needs {jobs} CPUs")
    from jaxres import onednn

    if not onednn.load()[0]:  # the campaign fixes compute.conv=onednn
        pytest.skip(f"oneDNN unavailable: {onednn.load()[1]}")
    out, results = tmp_path / "runs", tmp_path / "results" / "tiny"
    proc = subprocess.run([sys.executable, "-m", "experiments.campaign", "--study", "tiny", "--limit", "2",
                           "--jobs", str(jobs), "--out", str(out), "--results", str(results), "--raw-dir", str(RAW),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = sorted(p.name for p in results.iterdir() if p.is_dir())
    assert [k.split("_seed0")[0] for k in kept] == ["cifar10_seed_cnn", "cifar10_seed_resnet"]
    for k in kept:
        assert sorted(f.name for f in (results / k).iterdir()) == sorted(campaign.COPIED)
        r = json.loads((results / k / "results.json").read_text())
        assert (r["config"]["compute"]["precision"], r["config"]["compute"]["conv"]) == ("float32", "onednn")
        if jobs == 2:  # its own CPU, one thread, its own log
            assert "1 OpenMP threads" in r["environment"]["conv_backend_note"], r["environment"]
            assert "epoch 1" in (out / "logs" / f"{k}.log").read_text()
    assert (results / "claims.csv").is_file() and (results / "report.md").is_file()
    _check_report_from_copy(results, tmp_path / "copy")
    # on another machine the run folders are gone: the runs kept in results/ are not trained again, and a copy parked
    # before one of them finished elsewhere is removed
    shutil.rmtree(out)
    (results / campaign.PARKED / kept[0] / "checkpoints").mkdir(parents=True)
    again = subprocess.run([sys.executable, "-m", "experiments.campaign", "--study", "tiny", "--limit", "2",
                            "--out", str(out), "--results", str(results), "--raw-dir", str(RAW), "--no-progress"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("is already kept") == 2, again.stdout + again.stderr
    assert "finished; kept" not in again.stdout and not list(out.glob("*/results.json"))
    assert not (results / campaign.PARKED / kept[0]).exists()


def test_a_campaigns_probes_measure_each_finished_run_while_its_checkpoints_are_here(tmp_path, raw_dir):
    """depth_full_cpu measures every finished run's shattered gradients (experiments.shattering) before its report,
    and an unfinished run's before it is parked: the trained state and the kept epochs need the run's checkpoints,
    which no other machine has."""
    from jaxres import onednn

    if not onednn.load()[0]:
        pytest.skip(f"oneDNN unavailable: {onednn.load()[1]}")
    assert campaign.CAMPAIGNS["depth_full_cpu"].probes == ("experiments.shattering",)
    out, results = tmp_path / "runs", tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "experiments.campaign", "--campaign", "depth_full_cpu", "--study",
                           "tiny", "--limit", "1", "--out", str(out), "--results", str(results), "--raw-dir",
                           str(raw_dir), "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (kept,) = [p.name for p in results.iterdir() if p.is_dir()]
    assert kept.startswith("cifar10_resnet20_seed0")
    with open(results / "shattering.csv", newline="") as f:
        measured = {(r["run"], r["state"]) for r in csv.DictReader(f)}
    assert measured == {(kept, "init"), (kept, "trained")}
    # --park measures an unfinished run's kept epochs first: they are not parked, and a new machine has none
    (out / kept / "results.json").unlink()  # as if stopped after epoch 1 of more
    (results / "shattering.csv").unlink()
    park = ["--campaign", "depth_full_cpu", "--study", "tiny", "--limit", "1", "--out", str(out), "--results",
            str(results), "--raw-dir", str(raw_dir), "--park"]
    assert subprocess.run([sys.executable, "-m", "experiments.campaign", *park], cwd=ROOT, capture_output=True,
                          timeout=900).returncode == 0
    with open(results / "shattering.csv", newline="") as f:
        measured = {(r["run"], r["state"]) for r in csv.DictReader(f)}
    assert measured == {(kept, "init"), (kept, "epoch 1")} and (results / campaign.PARKED / kept).is_dir()


def test_a_parked_run_resumes_on_a_new_machine_as_if_never_stopped(tmp_path, capsys):
    """--park carries an unfinished run's newest saves into RESULTS/parked/ (a run longer than a session would
    otherwise restart on every new machine); put back into an empty --out, the run continues to the same numbers
    as one never stopped. A save that changed while it was copied is not parked."""
    if not (RAW / "cifar10").is_dir():
        pytest.skip(f"no CIFAR-10 files in {RAW}")
    from jaxres import onednn

    if not onednn.load()[0]:  # the campaign fixes compute.conv=onednn
        pytest.skip(f"oneDNN unavailable: {onednn.load()[1]}")
    results = tmp_path / "results"

    def train(out, epochs):
        args, queue = campaign._arguments(["--study", "tiny", "--limit", "1", "--out", str(out), "--results",
                                           str(results), "--raw-dir", str(RAW), "--no-progress"])
        cmd = campaign.command(queue[0], args) + ["--epochs", str(epochs)]
        assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600).returncode == 0
        return out / campaign.run_name(queue[0], args)

    whole = json.loads((train(tmp_path / "whole", 2) / "results.json").read_text())
    first = train(tmp_path / "first", 1)  # a run stopped after its first epoch of two
    (first / "results.json").unlink()
    park = ["--study", "tiny", "--limit", "1", "--out", str(tmp_path / "first"), "--results", str(results), "--park"]
    assert campaign.main(park) == 0 and "parked at epoch 1" in capsys.readouterr().out
    parked = results / campaign.PARKED / first.name
    assert sorted(p.name for p in parked.iterdir()) == ["checkpoints", "config.json", "layer_norms.npz", "manifests"]
    # a new machine: nothing in --out; the parked saves are put back and the run goes on from epoch 1
    assert campaign.unpark(parked, tmp_path / "new" / first.name) == "epoch 1"
    resumed = json.loads((train(tmp_path / "new", 2) / "results.json").read_text())
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_norm"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in whole["history"]], key
    # a checkpoint file that differs from its manifest (replaced while it was copied): not parked, nothing replaced
    victim = next(p for p in (first / "checkpoints" / "1").rglob("*") if p.is_file() and p.stat().st_size > 100)
    victim.write_bytes(b"x" + victim.read_bytes()[1:])
    before = sorted(p.relative_to(parked) for p in parked.rglob("*"))
    assert campaign.park(first, parked) is None and "not parked" in capsys.readouterr().err
    assert sorted(p.relative_to(parked) for p in parked.rglob("*")) == before


@pytest.mark.parametrize("study", sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else [])
def test_the_committed_results_rebuild_their_report_and_claims(study, tmp_path):
    """results/<study>: the report is rebuilt from the committed files alone, and its claims agree with them."""
    folder = RESULTS / study
    if not list(folder.glob("*/results.json")):
        pytest.skip(f"results/{study} holds no finished run yet")
    _check_report_from_copy(folder, tmp_path)


def _tables_after(text: str, marker: str) -> list[dict[tuple[str, str, int], list[str]]]:
    """Each markdown table whose header line contains marker, as {(dataset, model, seed): cells}."""
    lines, tables = text.splitlines(), []
    for k, ln in enumerate(lines):
        if ln.startswith("|") and marker in ln:
            header = [c.strip() for c in ln.strip("|").split("|")]
            assert {"dataset", "model", "seed"} <= set(header), ln  # every row names its run
            rows = {}
            for row in lines[k + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                rows[tuple(cells[header.index(c)] for c in ("dataset", "model")) + (int(cells[header.index("seed")]),)] = cells
            tables.append(rows)
    return tables


def test_the_readme_and_docs_seed_cpu_tables_are_the_committed_runs():
    """The runs quoted in README.md and docs/results.md are the committed results files' numbers, with at least
    the CIFAR-10 seed-0 pair in each (a run the campaign commits later may wait for its row)."""
    tables = [t for name in ("README.md", "docs/results.md")
              for t in _tables_after((ROOT / name).read_text(), "chosen on the test set")]
    assert len(tables) == 2
    runs = sorted((RESULTS / "seed_cpu").glob("*/results.json"))
    assert runs
    for table in tables:
        quoted = 0
        for run in runs:
            r = json.loads(run.read_text())
            dataset = {"cifar10": "CIFAR-10", "mnist": "MNIST"}[r["config"]["data"]["name"]]
            key, final = (dataset, r["config"]["model"]["name"], r["config"]["seed"]), r["final"]
            if key not in table:
                continue
            cells = table[key]
            best = max(e["test_accuracy"] for e in r["history"])
            assert f"{final['train_accuracy']:.4f}" in cells, key
            assert f"{final['test_accuracy']:.4f}" in cells, key
            assert any(c.startswith(f"{best:.4f}") for c in cells), key
            quoted += 1
        assert quoted == len(table)  # no row without a committed run behind it
        assert {("CIFAR-10", "seed_cnn", 0), ("CIFAR-10", "seed_resnet", 0)} <= table.keys()


def test_status_says_where_each_run_is_and_the_time_left_at_the_pace_of_the_epochs_so_far(tmp_path, capsys, monkeypatch):
    """--status from files alone: finished runs (here, the committed ones), a run under way in --out and one parked
    at their saved epochs, the rest not started; the time each still needs at its own pace on this CPU where its
    saved epochs ran on it, else from the median epoch of its network's runs, finished or under way (on this CPU
    where any ran on it), a depth without one scaled from its family's nearest; the wall time left at --jobs."""
    from jaxres import cpu
    monkeypatch.setattr(cpu, "host", lambda: {"model": "Test CPU", "cpus": 2, "isa": ["avx2"]})
    committed = RESULTS / "depth_full_cpu"
    names = {m: next(committed.glob(f"cifar10_{m}_seed0_*")).name for m in ("resnet20", "resnet56", "plain20")}
    results, out = tmp_path / "results", tmp_path / "runs"
    for name in names.values():
        shutil.copytree(committed / name, results / name)
    # resnet20's first 10 epochs ran on this CPU, the rest on the one its results name: the estimate takes the 10
    r20 = json.loads((results / names["resnet20"] / "results.json").read_text())
    assert not any("machine" in h for h in r20["history"])  # saved before rows named their machine
    for h in r20["history"][:10]:
        h.update(machine="Test CPU (avx2)", epoch_time_s=h["epoch_time_s"] * 3)
    (results / names["resnet20"] / "results.json").write_text(json.dumps(r20))
    median = {m: statistics.median(h["epoch_time_s"] for h in json.loads(
        (results / n / "results.json").read_text())["history"]) for m, n in names.items()}
    under_way, parked = (n.replace("seed0", "seed1") for n in (names["resnet56"], names["plain20"]))
    (out / under_way / "checkpoints" / "13").mkdir(parents=True)
    meta = results / campaign.PARKED / parked / "checkpoints" / "7" / "meta"
    meta.mkdir(parents=True)  # its own epochs: 4 saved before rows named their machine, 3 on this CPU
    history = [{"epoch": e + 1, "epoch_time_s": t, **({"machine": "Test CPU (avx2)"} if e >= 4 else {})}
               for e, t in enumerate((999, 999, 999, 999, 300, 100, 200))]
    (meta / "metadata").write_text(json.dumps({"epoch": 7, "step": 7 * 390, "history": history}))
    (out / names["plain20"].replace("plain20_seed0", "plain56_seed0")).mkdir()  # started, nothing saved yet
    before = sorted(results.rglob("*"))

    def status(jobs):
        argv = ["--campaign", "depth_full_cpu", "--out", str(out), "--results", str(results), "--status"]
        assert campaign.main(argv + ["--jobs", str(jobs)]) == 0
        return capsys.readouterr().out.splitlines()

    lines = status(1)
    assert lines[0] == "campaign depth_full_cpu (study depth_full_cpu): 3 of 14 runs finished, 3 under way, " \
                       "8 not started"
    rows = {(*line.split()[1:3], int(line.split()[4].rstrip(":"))): line for line in lines[1:15]}
    for m in names:
        assert "finished: 30 epochs, test accuracy" in rows[("cifar10", m, 0)]
    assert f"epoch 13 of 30 saved; about {(30 - 13) * median['resnet56'] / 3600:.1f} h to go at " \
           f"{median['resnet56']:.0f} s an epoch (resnet56's runs, on other CPUs)" in rows[("cifar10", "resnet56", 1)]
    median["resnet20"] = statistics.median(h["epoch_time_s"] for h in r20["history"][:10])
    assert f"at {median['resnet20']:.0f} s an epoch (resnet20's runs, on this CPU)" in \
        rows[("cifar10", "resnet20", 1)]
    median["plain20"] = 200  # plain20 seed 1, under way, has 3 epochs on this CPU: they set plain20's pace
    assert "at 200 s an epoch (plain20's runs, on this CPU)" in rows[("cifar10", "plain20", 2)]
    assert f"started, no epoch of 30 saved yet; about {30 * 200 * 56 / 20 / 3600:.1f} h" in rows[("cifar10", "plain56", 0)]
    assert f"epoch 7 of 30 saved; about {23 * 200 / 3600:.1f} h to go at 200 s an epoch (its own 3 epochs on this " \
           "CPU)" in rows[("cifar10", "plain20", 1)]  # an unfinished run's own pace on this CPU comes first
    assert f"not started; about {30 * median['plain20'] * 56 / 20 / 3600:.1f} h to go at " \
           f"{median['plain20'] * 56 / 20:.0f} s an epoch (plain20's, on this CPU, scaled by depth 56/20)" \
           in rows[("cifar10", "plain56", 2)]
    assert "(resnet56's, on other CPUs, scaled by depth 110/56)" in rows[("cifar10", "resnet110", 0)]
    need = (17 * median["resnet56"] + 23 * 200 + 30 * (  # then 9 not started: plain56 at seeds 0-2
            2 * median["resnet20"] + median["resnet56"] + median["plain20"] + 3 * median["plain20"] * 56 / 20
            + median["resnet56"] * 110 / 56 + median["plain20"] * 110 / 20))
    assert lines[15] == f"left: about {need / 3600:.1f} h of run time, {need / 3600:.1f} h of wall time at --jobs 1"
    assert "on this CPU, Test CPU (avx2)," in lines[16] and "they ran on Test CPU (avx2); machines not recorded (older rows);" in lines[16]
    wall2 = float(status(2)[15].split(", ")[1].split()[0])
    assert need / 3600 / 2 - 0.1 <= wall2 < need / 3600  # two at once: at best half the run time
    assert sorted(results.rglob("*")) == before and not out.joinpath("logs").exists()  # read only


def test_the_readme_and_docs_depth_tables_and_verdicts_are_the_committed_runs():
    """The README's depth table and docs/results.md's are what the report rebuilds from the committed
    depth_full_cpu runs of the seeds they count (seeds 0 to n-1: a run the campaign commits later may wait for its
    update), and every depth claim's difference and interval the README quotes is the one those runs give."""
    import re

    from jaxres.report import depth
    from jaxres.report.runs import load_results
    docs, readme = ((ROOT / name).read_text() for name in ("docs/results.md", "README.md"))
    said = readme[readme.index("**He et al.'s degradation experiment"):]
    said = " ".join(said[:said.index("\n## ")].split())
    quoted = {}  # (kind, depth) -> (train, test, seeds) as the README gives them
    for ln in readme.splitlines():
        m = re.fullmatch(r"\| (\d+) \| (.+?) \| (.+?) \| ≈.*", ln)
        for kind, cell in zip(("plain", "resnet"), m.groups()[1:] if m else ()):
            train, test, n = re.fullmatch(r"([\d.]+)% / ([\d.]+)%(?: \((\d) seeds\))?", cell).groups()
            quoted[(kind, int(m[1]))] = (train, test, int(n or 1))
    assert set(quoted) == {(k, n) for k in ("plain", "resnet") for n in (20, 56)}
    runs = [r for r in load_results(RESULTS / "depth_full_cpu")
            if r["config"]["seed"] < quoted.get(depth._depth_of(r["config"]["model"]["name"]), (0, 0, 0))[2]]
    groups = depth.depth_groups(runs)
    for ln in depth.depth_markdown(groups).splitlines():
        if ln.startswith("| cifar10 |"):
            cells = [c.strip() for c in ln.split("|")[2:-1]]
            assert "| " + " | ".join(cells) + " |" in docs, cells  # the docs' table is the report's
            for kind, (train, test) in zip(("plain", "resnet"), (cells[1:3], cells[3:5])):
                assert quoted[(kind, int(cells[0]))][:2] == (train.split()[0], test.split()[0]), (kind, cells[0])
    claims = depth.claims(groups)
    for c in claims:
        if c["verdict"] == "holds":
            low, high = (f"{abs(v):.2f}" for v in c["ci"])
            assert f"{abs(c['estimate']):.2f} " in said and f"({low} to {high}" in said, c["claim"]
    assert ("Every depth verdict *holds*" in said) == all(c["verdict"] == "holds" for c in claims)
