"""The report's claims: differences between models with Welch's 95% interval over seeds."""
import math
import statistics

import pytest
from scipy import stats

from jaxres import report


def result(model, seed, test_acc, lr=0.001, diverged=None):
    return {"config": {"data": {"name": "mnist"}, "model": {"name": model}, "optimizer": {"lr": lr},
                       "epochs": 3, "seed": seed},
            "final": {"train_accuracy": 0.9, "test_accuracy": test_acc, "train_examples": 100,
                      "test_examples": 50},
            "wall_time_s": 1.0, "diverged": diverged}


def welch(xa, xb, level=0.95):
    """Welch's interval written out: the difference of means ± t quantile x the unpooled standard error."""
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    d = statistics.fmean(xa) - statistics.fmean(xb)
    return d - half, d + half, df


def test_difference_and_its_welch_interval():
    resnet, cnn = [0.95, 0.97, 0.96], [0.90, 0.94, 0.91, 0.93]  # unequal n and spread
    results = [result("seed_resnet", s, a) for s, a in enumerate(resnet)]
    results += [result("seed_cnn", s, a) for s, a in enumerate(cnn)]
    results += [result("seed_cnn", 9, 0.10, diverged={"step": 3, "epoch": 1})]  # left out
    (d,) = report.model_differences(report.summary_rows(results), results)
    sign = 1 if d["a"] == "seed_resnet" else -1
    xa, xb = (resnet, cnn) if sign == 1 else (cnn, resnet)
    lo, hi, df = welch(xa, xb)
    assert (d["n_a"], d["n_b"]) == (len(xa), len(xb))
    assert d["difference"] == pytest.approx(statistics.fmean(xa) - statistics.fmean(xb))
    assert d["ci"] == pytest.approx((lo, hi)) and d["df"] == pytest.approx(df)
    assert d["excludes_zero"] == (lo > 0 or hi < 0) and d["excludes_zero"]
    (line,) = report.difference_lines([d], [])
    assert "95% CI" in line and "Welch" in line and "excludes 0" in line


def test_overlapping_seeds_make_no_claim_and_one_seed_gives_no_interval():
    results = [result("seed_resnet", s, a) for s, a in enumerate([0.90, 0.95, 0.92])]
    results += [result("seed_cnn", s, a) for s, a in enumerate([0.91, 0.94, 0.90])]
    (d,) = report.model_differences(report.summary_rows(results), results)
    assert d["ci"][0] < 0 < d["ci"][1] and not d["excludes_zero"]
    assert "includes 0: no difference shown" in report.difference_lines([d], [])[0]
    single = [result("seed_resnet", 0, 0.9), result("seed_cnn", 0, 0.8)]
    (d,) = report.model_differences(report.summary_rows(single), single)
    assert d["ci"] is None and "too few seeds" in report.difference_lines([d], [])[0]


def test_only_rows_that_differ_in_the_model_alone_are_compared():
    results = [result("seed_resnet", s, 0.9 + s / 100, lr=0.001) for s in range(3)]
    results += [result("seed_cnn", s, 0.8 + s / 100, lr=0.002) for s in range(3)]  # another lr: not a pair
    assert report.model_differences(report.summary_rows(results), results) == []
    results += [result("seed_cnn", s, 0.8 + s / 100, lr=0.001) for s in range(3)]
    (d,) = report.model_differences(report.summary_rows(results), results)
    assert d["config"]["optimizer.lr"] == 0.001
    assert "optimizer.lr=0.001" in report.difference_lines([d], ["optimizer.lr"])[0]


def depth_run(model, seed, train_errs, test_errs, lr=0.1, batch=100):
    """A results.json of He et al.'s networks: per-epoch train/test error (%), 10 steps per epoch."""
    history = [{"epoch": e + 1, "train_accuracy": 1 - tr / 100, "test_accuracy": 1 - te / 100,
                "train_examples": 10 * batch} for e, (tr, te) in enumerate(zip(train_errs, test_errs))]
    return {"run": f"cifar10_{model}_seed{seed}",
            "config": {"data": {"name": "cifar10", "batch_size": batch}, "model": {"name": model},
                       "optimizer": {"lr": lr}, "epochs": len(history), "seed": seed},
            "history": history, "final": {**history[-1], "train_examples": 1000, "test_examples": 50},
            "wall_time_s": 1.0, "diverged": None}


def test_depth_table_pairs_plain_and_resnet_per_depth_beside_he_et_al(tmp_path):
    results = [depth_run("plain20", s, [50, 20], [40, 25 + s]) for s in (0, 1)]
    results += [depth_run("plain56", 0, [60, 30], [55, 35]), depth_run("resnet20", 0, [45, 15], [35, 20]),
                depth_run("resnet56", 0, [40, 10], [30, 18]), depth_run("seed_cnn", 0, [1, 1], [1, 1])]
    groups = report.depth_groups(results)
    assert set(groups) == {("cifar10", k, n) for k in ("plain", "resnet") for n in (20, 56)}
    assert report._iterations(groups[("cifar10", "plain", 56)][0]) == [10, 20]
    table = report.depth_markdown(groups).splitlines()
    row20 = next(line for line in table if line.startswith("| cifar10 | 20 |"))
    # plain20: train 20, 20 -> 20.00 ± 0.00; test 25, 26 -> 25.50 ± 0.71; He et al. 8.75
    assert [c.strip() for c in row20.split("|")[3:-1]] == ["20.00 ± 0.00", "25.50 ± 0.71", "15.00", "20.00", "8.75"]
    assert "| cifar10 | 56 | 30.00 | 35.00 | 10.00 | 18.00 | 6.97 |" in table
    lines, figures = report.depth_section(results, tmp_path)
    assert [p.name for p in figures] == ["depth_curves_cifar10.png", "depth_error_cifar10.png"]
    assert all(p.stat().st_size > 10_000 for p in figures) and "JPEG" in " ".join(lines)


def test_depth_section_needs_one_setting_and_two_depths(tmp_path):
    one_depth = [depth_run("plain20", 0, [50], [40]), depth_run("resnet20", 0, [45], [35])]
    assert report.depth_section(one_depth, tmp_path) == ([], [])
    mixed = [depth_run("plain20", 0, [50], [40]), depth_run("plain56", 0, [50], [40], lr=0.01)]
    assert report.depth_groups(mixed) == {}  # another lr: the depths are not comparable, no figure


def test_runs_that_differ_in_more_than_the_model_get_one_panel_per_setting(tmp_path):
    """norm_opt-like: a norm axis and a tied optimizer axis (name and lr together) over two models."""
    results = []
    for norm in ("none", "batch"):
        for name, lr in (("adam", 0.001), ("sgd", 0.01)):
            for model in ("seed_cnn", "seed_resnet"):
                r = depth_run(model, 0, [50, 40], [45, 42], lr=lr)
                r["config"]["model"]["norm"], r["config"]["optimizer"]["name"] = norm, name
                results.append(r)
    columns = report.varying_keys(results)
    keys, rows, cols = report.facets(results, columns)
    assert keys == ["model.norm", "optimizer.lr", "optimizer.name"]
    assert rows == [("batch",), ("none",)] and cols == [("0.001", "adam"), ("0.01", "sgd")]
    path = report.plot_facets(results, "cifar10", tmp_path / "f.png", columns)
    assert path.stat().st_size > 10_000
    assert report.facets(results[:2], report.varying_keys(results[:2]))[1:] == ([()], [()])  # the model alone
