"""The report's claims: differences between models with Welch's 95% interval over seeds."""
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from jaxres import report
from synthetic import history_result


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


def test_a_side_without_spread_gives_welchs_interval_without_a_warning(recwarn):
    """Convergence epochs 5, 5 against 5, 6, 5 (claim C3 on the campaign): scipy warned of a precision loss that is
    not there; the interval is Welch's, written out."""
    from jaxres import stats as jstats

    est = jstats.welch([5, 5], [5, 6, 5])
    lo, hi, df = welch([5, 5], [5, 6, 5])
    assert est.ci == pytest.approx((lo, hi)) and est.df == pytest.approx(df)
    assert not [w for w in recwarn if "Precision loss" in str(w.message)]


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


def test_a_run_saved_before_a_key_existed_pools_with_one_saved_after_at_its_default(tmp_path):
    """The CI failure of 2026-12-05: seed 0 of a model saved without ``data.validation``, seed 1 with it at its
    default (0). They are one protocol: one group of two seeds, and no column for the key; a run that does
    set it to something else is another group."""
    import json

    from jaxres.config import RunConfig
    from jaxres.results import SCHEMA

    def write(name, seed, acc, **data):
        r = {**result("seed_cnn", seed, acc), "schema": SCHEMA, "run": name,
             "history": [{"epoch": 1, "test_accuracy": acc}]}
        r["config"]["data"].update(data)
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))

    write("a_seed0", 0, 0.90)                                            # predates the key
    write("a_seed1", 1, 0.92, validation=RunConfig().data.validation)    # has it, at its default
    results = report.load_results(tmp_path)
    assert [r["config"]["data"]["validation"] for r in results] == [0, 0]
    assert "data.validation" not in report.varying_keys(results)
    (row,) = report.summary_rows(results)
    assert row["seeds"] == 2 and row["test_acc_mean"] == pytest.approx(0.91)
    write("a_seed2", 2, 0.91, validation=5000)                           # another protocol
    results = report.load_results(tmp_path)
    assert "data.validation" in report.varying_keys(results)
    assert len(report.summary_rows(results)) == 2


def test_runs_that_differ_in_more_than_the_model_get_one_panel_per_setting(tmp_path):
    """norm_opt-like: a norm axis and a tied optimizer axis (name and lr together) over two models."""
    results = []
    for norm in ("none", "batch"):
        for name, lr in (("adam", 0.001), ("sgd", 0.01)):
            for model in ("seed_cnn", "seed_resnet"):
                r = history_result(model, 0, [50, 40], [45, 42], lr=lr)
                r["config"]["model"]["norm"], r["config"]["optimizer"]["name"] = norm, name
                results.append(r)
    columns = report.varying_keys(results)
    keys, rows, cols = report.facets(results, columns)
    assert keys == ["model.norm", "optimizer.lr", "optimizer.name"]
    assert rows == [("batch",), ("none",)] and cols == [("0.001", "adam"), ("0.01", "sgd")]
    path = report.plot_facets(results, "cifar10", tmp_path / "f.png", columns)
    assert path.stat().st_size > 10_000
    assert report.facets(results[:2], report.varying_keys(results[:2]))[1:] == ([()], [()])  # the model alone


# ------------------------------------------------------------------ figures (issue 36, cases 1 and 2)
def run_of(history, diverged=None, model="seed_cnn", seed=0):
    return {"run": f"mnist_{model}_seed{seed}", "config": {"data": {"name": "mnist"}, "model": {"name": model},
                                                           "epochs": len(history), "seed": seed},
            "history": history, "final": history[-1], "diverged": diverged}


def row(epoch, train_loss, train_acc, test_loss, test_acc):
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss,
            "test_accuracy": test_acc}


def drawn(ax):
    """(x, y) of every line drawn in data coordinates with a visible marker or a line of two points or more."""
    return [line.get_xydata() for line in ax.get_lines()
            if line.get_marker() not in (None, "None", "") or len(line.get_xydata()) > 1]


def test_a_one_epoch_run_is_drawn_as_points_on_an_axis_around_its_epoch():
    """Case 1: one epoch drew a legend and no data (lines of one point, no marker) on an axis of 0.945-1.05."""
    import matplotlib.pyplot as plt

    fig = report.curves_figure([run_of([row(1, 0.5, 0.8, 0.4, 0.85)]), run_of([row(1, 0.6, 0.7, 0.5, 0.75)],
                                                                             model="seed_resnet")], "mnist")
    try:
        for ax, values in zip(fig.axes, ({0.8, 0.85, 0.7, 0.75}, {0.5, 0.4, 0.6})):
            points = drawn(ax)
            assert len(points) == 4 and all(p.shape == (1, 2) and p[0, 0] == 1 for p in points)
            assert {float(p[0, 1]) for p in points} == values
            assert ax.get_xlim() == (0.5, 1.5) and len(ax.get_legend().get_texts()) == 4
    finally:
        plt.close(fig)


def test_a_diverged_run_without_a_finite_loss_is_marked_on_the_axis_not_at_zero(recwarn):
    """Case 2: a loss that is null everywhere was drawn as an x at loss 0, with an empty legend box and a
    matplotlib warning."""
    import matplotlib.pyplot as plt

    nan = {"epoch": 1, "step": 1}
    fig = report.curves_figure([run_of([row(1, None, None, None, 0.1)], diverged=nan)], "mnist")
    try:
        ax_acc, ax_loss = fig.axes
        (x,) = [line for line in ax_loss.get_lines() if line.get_marker() == "x"]
        assert x.get_transform() != ax_loss.transData and tuple(x.get_xydata()[0]) == (1.0, 0.0)  # the bottom edge
        assert not [line for line in ax_loss.get_lines() if line.get_transform() == ax_loss.transData]  # no made-up y
        assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == [
            "seed_cnn diverged (epoch 1), no finite loss"]
        assert [tuple(p[0]) for p in drawn(ax_acc)] == [(1.0, 0.1), (1.0, 0.0)]  # test accuracy; x on the edge
    finally:
        plt.close(fig)
    fig = report.curves_figure([run_of([row(1, 2.0, 0.3, 2.1, 0.2), row(2, None, None, None, 0.1)],
                                       diverged={"epoch": 2, "step": 9})], "mnist")
    try:
        (x,) = [line for line in fig.axes[1].get_lines() if line.get_marker() == "x"]
        assert x.get_transform() == fig.axes[1].transData and tuple(x.get_xydata()[0]) == (2.0, 2.0)  # last finite
    finally:
        plt.close(fig)
    assert not [w for w in recwarn if "legend" in str(w.message).lower()]


def test_the_seeds_of_a_setting_share_its_colour_and_one_legend_entry_per_split():
    """Nine runs (three models x three seeds) drew 18 legend entries over the curves; now one per model and split,
    every run still drawn."""
    import matplotlib.pyplot as plt

    runs = [run_of([row(1, 0.5, 0.8, 0.4, 0.85), row(2, 0.4, 0.9, 0.5, 0.8)], model=m, seed=s)
            for m in ("seed_cnn", "seed_resnet", "seed_plain_twin") for s in range(3)]
    fig = report.curves_figure(runs, "mnist")
    try:
        for ax in fig.axes:
            assert len(drawn(ax)) == 18  # train and test of each of the nine runs
            texts = [t.get_text() for t in ax.get_legend().get_texts()]
            assert texts == [f"{m} (3 seeds) {split}" for m in ("seed_cnn", "seed_resnet", "seed_plain_twin")
                             for split in ("train", "test")]
            by_model = {}
            for line in ax.get_lines():
                by_model.setdefault(line.get_color(), 0)
                by_model[line.get_color()] += 1
            assert sorted(by_model.values()) == [6, 6, 6]  # a colour per model, its three seeds' two lines each
    finally:
        plt.close(fig)


@pytest.mark.parametrize("steps", [[0], [0, 10, 20], [0, 10, 20, 35, 36]])
def test_the_layer_heatmap_has_one_cell_per_recorded_step_around_it(steps):
    """Case 1: heatmap cells did not line up with the recorded steps (spread evenly over first-to-last step)."""
    import matplotlib.pyplot as plt

    names = ["conv0", "conv1", "head"]
    grad = np.arange(1, 1 + 3 * len(steps), dtype=float).reshape(len(steps), 3)
    fig = report.layer_heatmap_figure(names, {"steps": np.array(steps), "grad": grad}, "t")
    try:
        (mesh,) = fig.axes[0].collections
        x_edges = mesh.get_coordinates()[0, :, 0]
        assert len(x_edges) == len(steps) + 1 and np.all(np.diff(x_edges) > 0)
        assert all(x_edges[i] < s < x_edges[i + 1] for i, s in enumerate(steps))
        np.testing.assert_array_equal(mesh.get_array().reshape(3, len(steps)), grad.T)  # layer i, step j: its value
    finally:
        plt.close(fig)


def test_a_few_extreme_steps_do_not_take_the_heatmaps_colour_scale():
    """plain56's step-0 gradient (300x the rest) made every other cell one colour: from HEATMAP_CLIP_CELLS cells on,
    the colours span the 1st to 99th percentile, the colour bar says so and points beyond with arrows."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    names = [f"block{i}/conv0" for i in range(10)]
    grad = np.exp(rng.normal(size=(100, 10)))
    grad[0] = 300.0  # an explosion at step 0
    fig = report.layer_heatmap_figure(names, {"steps": np.arange(0, 1000, 10), "grad": grad}, "t")
    try:
        mesh, bar = fig.axes[0].collections[0], fig.axes[1]
        np.testing.assert_allclose((mesh.norm.vmin, mesh.norm.vmax), np.percentile(grad, [1, 99]))
        assert mesh.norm.vmax < 300 and "1st-99th percentile" in bar.get_ylabel()
        assert mesh.colorbar.extend == "both"
    finally:
        plt.close(fig)
    few = grad[:10, :10]  # under HEATMAP_CLIP_CELLS cells: the whole range, no arrows
    assert few.size < report.figures.HEATMAP_CLIP_CELLS
    fig = report.layer_heatmap_figure(names, {"steps": np.arange(10), "grad": few}, "t")
    try:
        mesh = fig.axes[0].collections[0]
        assert (mesh.norm.vmin, mesh.norm.vmax) == (few.min(), few.max()) and mesh.colorbar.extend == "neither"
    finally:
        plt.close(fig)


def test_layer_lines_with_one_recorded_step_show_points():
    """Case 1: layer_grads panels were empty when a run had no more steps than layer_norms_every."""
    import matplotlib.pyplot as plt

    names = ["block0/conv0", "block1/conv0", "block2/conv0", "head"]
    series = {"steps": np.array([0]), "grad": np.array([[1.0, 2.0, 3.0, 4.0]])}
    fig = report.layer_lines_figure([("cnn", names, series), ("resnet", names, series)], "t")
    try:
        for ax in fig.axes:
            assert sorted(float(p[0, 1]) for p in drawn(ax)) == [1.0, 2.0, 3.0]
    finally:
        plt.close(fig)


def test_model_differences_are_residual_minus_plain_as_the_claims_are():
    """Also seen in issue 36: "Model against model" said cnn - resnet = -0.135 where the claims said resnet - cnn =
    +0.135. Both now subtract the plain network from the residual one, whatever the order of the rows."""
    for order in (1, -1):
        results = [result(m, s, a) for m, a in (("seed_cnn", 0.80), ("seed_resnet", 0.90)) for s in range(2)][::order]
        (d,) = report.model_differences(report.summary_rows(results), results)
        assert (d["a"], d["b"]) == ("seed_resnet", "seed_cnn") and d["difference"] == pytest.approx(0.10)
