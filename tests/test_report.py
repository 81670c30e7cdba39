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
