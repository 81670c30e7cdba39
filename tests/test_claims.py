"""The seed's claims as verdicts (jaxres.claims): each verdict from synthetic histories, and real runs."""
import dataclasses
import csv
import io
import json
import statistics

import pytest

from jaxres import claims, report, stats


def run(model, seed, train, test, dataset="cifar10", precision="float32"):
    """A results.json-like run whose per-epoch train / test accuracies are the given lists."""
    history = [{"epoch": i + 1, "train_accuracy": a, "test_accuracy": b, "train_loss": 1.0, "test_loss": 1.0,
                "train_examples": 100, "test_examples": 50} for i, (a, b) in enumerate(zip(train, test))]
    return {"config": {"data": {"name": dataset}, "model": {"name": model}, "compute": {"precision": precision},
                       "epochs": len(history), "seed": seed},
            "history": history, "final": history[-1], "wall_time_s": 1.0, "diverged": None}


def rows_of(results, claim, a="seed_cnn"):
    return [r for r in claims.claims(results) if r["claim"] == claim and r["a"] == a]


def test_convergence_reads_the_history():
    c = claims.convergence(run("seed_cnn", 0, [0.5, 0.9, 0.96, 0.992, 0.994, 0.993], [0.4, 0.5, 0.6, 0.58, 0.59, 0.55])
                           ["history"])
    assert c["converged_epoch"] == 4           # 0.992 is within 0.005 of the best, 0.994
    assert c["epochs_to_0.95"] == 3 and c["epochs_to_0.99"] == 4
    assert (c["best_test"], c["best_test_epoch"], c["final_test"]) == (0.6, 3, 0.55)
    assert c["test_converged_epoch"] == 3      # 0.58 and 0.59 are not within 0.005 of 0.6
    assert claims.convergence(run("seed_cnn", 0, [0.5, 0.6], [0.1, 0.2])["history"])["epochs_to_0.95"] is None


def test_each_verdict_of_a_difference():
    # C1 holds: the ResNet is better at every seed, with a spread
    holds = [run("seed_cnn", s, [0.99], [0.55 + s / 100]) for s in range(3)]
    holds += [run("seed_resnet", s, [0.99], [0.60 + s / 100]) for s in range(3)]
    (r,) = rows_of(holds, "C1")
    est = stats.welch([0.60, 0.61, 0.62], [0.55, 0.56, 0.57])
    assert r["estimate"] == pytest.approx(0.05) and r["ci"] == pytest.approx(est.ci)
    assert r["verdict"] == "holds" and r["ci"][0] > 0
    assert (r["published_a"], r["published_b"]) == (0.5569, 0.6067) and (r["n_a"], r["n_b"]) == (3, 3)
    # contradicted: the CNN is better
    contra = [run("seed_cnn", s, [0.99], [0.65 + s / 100]) for s in range(3)]
    contra += [run("seed_resnet", s, [0.99], [0.60 + s / 100]) for s in range(3)]
    assert rows_of(contra, "C1")[0]["verdict"] == "contradicted"
    # not resolved: the intervals overlap 0, or one seed
    spans = [run("seed_cnn", s, [0.99], [a]) for s, a in enumerate([0.60, 0.65, 0.58])]
    spans += [run("seed_resnet", s, [0.99], [a]) for s, a in enumerate([0.62, 0.59, 0.61])]
    r = rows_of(spans, "C1")[0]
    assert r["verdict"] == "not resolved" and r["ci"][0] < 0 < r["ci"][1] and "spans" in r["why"]
    one = [run("seed_cnn", 0, [0.99], [0.5]), run("seed_resnet", 0, [0.99], [0.7])]
    r = rows_of(one, "C1")[0]
    assert r["verdict"] == "not resolved" and r["ci"] is None and "fewer than 2 seeds" in r["why"]


def test_claims_about_each_model_and_convergence():
    fit = [0.9, 0.985, 0.99]       # C2: above 0.98 at the end; converged at epoch 2 (within 0.005 of 0.99)
    slow = [0.5, 0.7, 0.9, 0.97, 0.985, 0.99]
    results = [run("seed_resnet", s, fit + [0.99 + s / 1000] * 3, [0.6] * 6) for s in range(3)]
    results += [run("seed_cnn", s, slow[:-1] + [0.99 + s / 1000], [0.55] * 6) for s in range(3)]
    c2, = rows_of(results, "C2")
    assert c2["verdict"] == "holds" and c2["ci_a"][0] > 0.98 and c2["ci_b"][0] > 0.98
    c3, = rows_of(results, "C3")
    assert c3["estimate"] > 0 and c3["verdict"] == "holds"           # the CNN needs more epochs
    assert "no spread" not in c3["why"] + c2["why"]                 # the CNN converged at epoch 5 or 6
    # every seed converges at the same epoch (5 and 2): the interval is the point, and the why says so
    same = [run("seed_resnet", s, fit + [0.99] * 3, [0.6] * 6) for s in range(3)]
    same += [run("seed_cnn", s, slow, [0.55] * 6) for s in range(3)]
    c3, = rows_of(same, "C3")
    assert c3["ci"] == (3, 3) and c3["verdict"] == "holds"
    assert c3["why"] == "interval above 0 (no spread across seeds: the interval is the mean itself)"
    assert (c3["published_a"], c3["published_b"]) == (80, 50)
    c4, = rows_of(results, "C4")                                     # gaps of 0.39 and 0.44: overfits
    assert c4["verdict"] == "holds"
    # one model below the threshold contradicts a claim about each
    under = [run("seed_resnet", s, [0.90 + s / 1000], [0.85]) for s in range(3)]
    under += [run("seed_cnn", s, [0.99 + s / 1000], [0.55]) for s in range(3)]
    assert rows_of(under, "C2")[0]["verdict"] == "contradicted"
    assert rows_of(under, "C4")[0]["verdict"] == "contradicted"      # the ResNet's gap is 0.05
    # C4 is the seed's claim about CIFAR-10 only
    mnist = [run(m, 0, [0.99], [0.98], dataset="mnist") for m in ("seed_cnn", "seed_resnet")]
    assert not rows_of(mnist, "C4") and rows_of(mnist, "C1")


def test_the_plain_twin_pair_and_settings_are_kept_apart():
    results = [run(m, s, [0.99], [a + s / 100], precision=p) for s in range(2)
               for m, a in (("seed_cnn", 0.5), ("seed_resnet", 0.6), ("seed_plain_twin", 0.4))
               for p in ("float32", "bfloat16")]
    rows = claims.claims(results)
    pairs = {(r["a"], r["setting"]["compute.precision"]) for r in rows if r["claim"] == "C1"}
    assert pairs == {(a, p) for a in ("seed_cnn", "seed_plain_twin") for p in ("float32", "bfloat16")}
    assert all(r["n_a"] == 2 and r["n_b"] == 2 for r in rows)        # never pooled over precisions
    twin = next(r for r in rows if r["claim"] == "C1" and r["a"] == "seed_plain_twin")
    assert twin["estimate"] == pytest.approx(0.2) and twin["published_a"] is None
    text = claims.claims_markdown(rows)
    assert "compute.precision=bfloat16" in text and "seed_plain_twin vs seed_resnet" in text
    diverged = results + [dict(run("seed_cnn", 5, [0.1], [0.1]), diverged={"epoch": 1, "step": 3})]
    assert claims.claims(diverged) == rows                           # a diverged run is left out
    # claims.csv names a row's setting by what differs between settings, not the whole config on every row
    settings = {r["setting"] for r in csv.DictReader(io.StringIO(claims.claims_csv(rows)))}
    assert settings == {'{"compute.precision": "float32"}', '{"compute.precision": "bfloat16"}'}
    one = [r for r in rows if r["setting"]["compute.precision"] == "float32"]
    assert {r["setting"] for r in csv.DictReader(io.StringIO(claims.claims_csv(one)))} == {"{}"}


@pytest.mark.slow  # 4 runs end to end; make test covers the claims on written results and the report of a study
def test_claims_from_real_runs_in_the_report(tmp_path, raw_dir):
    from experiments import compare

    out = tmp_path / "out"
    code = compare.main(["--study", "tiny", "--datasets", "cifar10", "--models", "seed_cnn,seed_resnet", "--epochs",
                         "2", "--seeds", "0,1", "--raw-dir", str(raw_dir), "--out", str(out), "--no-progress"])
    assert code == 0
    text = (out / "report.md").read_text()
    assert "## The seed's claims" in text and "### Convergence and best epochs" in text
    lines = (out / "claims.csv").read_text().splitlines()
    assert lines[0].startswith("claim,dataset") and len(lines) == 1 + 4    # C1-C4 for the seed's pair
    results = report.load_results(out)
    c1 = next(r for r in claims.claims(results) if r["claim"] == "C1")
    final = {m: [r["final"]["test_accuracy"] for r in results if r["config"]["model"]["name"] == m]
             for m in ("seed_cnn", "seed_resnet")}
    assert c1["estimate"] == pytest.approx(statistics.fmean(final["seed_resnet"]) - statistics.fmean(final["seed_cnn"]))
    assert c1["verdict"] in claims.VERDICTS and json.loads(json.dumps(c1["setting"]))["data.name"] == "cifar10"


def test_the_pairs_are_read_off_the_catalog(monkeypatch):
    """The seed's pair and the twin pair come from the presets' facts (published numbers, residual, twin), so a
    ResNet published with its own twin gets its pairs without an edit to claims.py."""
    from jaxres import catalog

    assert claims.PAIRS == (("seed_cnn", "seed_resnet"), ("seed_plain_twin", "seed_resnet"))
    mnist = catalog.DATASETS["mnist"]
    more = {**mnist.published, "resnet20": {"train": 1.0, "test": 0.9}}
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(mnist, published=more))
    assert claims.seed_pairs() == (("seed_cnn", "resnet20"), ("seed_cnn", "seed_resnet"),
                                   ("plain20", "resnet20"), ("seed_plain_twin", "seed_resnet"))
