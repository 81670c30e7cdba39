"""He et al.'s degradation experiment in the report (jaxres.report.depth): the table, the claims D1-D5 and G1-G2
with their intervals, the figures, from results files alone."""
import csv
import json
import re
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from jaxres import stats
from jaxres.report import depth, write_report
from jaxres.results import SCHEMA
from synthetic import history_result


# final (train, test) error per network and seed: plain56 degrades, the shortcuts fix it, and more so at 56
FINAL = {"plain20": [(5.0, 10.0), (5.5, 10.4), (4.6, 9.8)], "plain56": [(9.0, 14.0), (9.8, 14.6), (8.9, 13.5)],
         "resnet20": [(4.0, 9.0), (4.3, 9.2), (3.9, 8.7)], "resnet56": [(2.0, 7.5), (2.4, 7.1), (2.1, 7.3)]}


def _study(seeds=(0, 1, 2), extra=()):
    runs = [history_result(m, s, [50, v[s][0]], [45, v[s][1]]) for m, v in FINAL.items() for s in seeds]
    return runs + list(extra)


def test_depth_table_pairs_plain_and_resnet_per_depth_beside_he_et_al(tmp_path):
    results = [history_result("plain20", s, [50, 20], [40, 25 + s]) for s in (0, 1)]
    results += [history_result("plain56", 0, [60, 30], [55, 35]), history_result("resnet20", 0, [45, 15], [35, 20]),
                history_result("resnet56", 0, [40, 10], [30, 18]), history_result("seed_cnn", 0, [1, 1], [1, 1])]
    groups = depth.depth_groups(results)
    assert set(groups) == {("cifar10", k, n) for k in ("plain", "resnet") for n in (20, 56)}
    assert depth._iterations(groups[("cifar10", "plain", 56)][0]) == [10, 20]
    table = depth.depth_markdown(groups).splitlines()
    row20 = next(line for line in table if line.startswith("| cifar10 | 20 |"))
    # plain20: train 20, 20 -> 20.00 ± 0.00 over 2 seeds; test 25, 26 -> 25.50 ± 0.71; He et al. ≈9.5 and 8.75
    assert [c.strip() for c in row20.split("|")[3:-1]] == ["20.00 ± 0.00 (2)", "25.50 ± 0.71 (2)", "15.00 (1)",
                                                          "20.00 (1)", "≈9.5", "8.75"]
    assert "| cifar10 | 56 | 30.00 (1) | 35.00 (1) | 10.00 (1) | 18.00 (1) | ≈13.5 | 6.97 |" in table
    lines, rows, figures = depth.depth_section(results, tmp_path)
    assert [p.name for p in figures] == ["depth_curves_cifar10.png", "depth_error_cifar10.png"]
    assert all(p.stat().st_size > 10_000 for p in figures) and "JPEG" in " ".join(lines)
    assert rows and {r["verdict"] for r in rows} == {"not resolved"}  # one seed somewhere: values, no verdict


def test_depth_section_needs_one_setting_and_two_depths(tmp_path):
    one_depth = [history_result("plain20", 0, [50], [40]), history_result("resnet20", 0, [45], [35])]
    assert depth.depth_section(one_depth, tmp_path) == ([], [], [])
    mixed = [history_result("plain20", 0, [50], [40]), history_result("plain56", 0, [50], [40], lr=0.01)]
    assert depth.depth_groups(mixed) == {}  # another lr: the depths are not comparable, no figure


def test_a_contrast_of_two_groups_is_welchs_interval_and_of_four_the_satterthwaite_one():
    a, b, c, d = [1.0, 2.0, 4.0], [0.5, 0.7, 0.2, 0.4], [3.0, 3.5, 2.9], [1.0, 1.1, 1.6]
    two, welch = stats.contrast([a, b], [1, -1]), stats.welch(a, b)
    assert two.value == pytest.approx(welch.value) and two.df == pytest.approx(welch.df)
    assert two.ci == pytest.approx(welch.ci)
    four = stats.contrast([a, b, c, d], [1, -1, -1, 1])
    v = [statistics.variance(x) / len(x) for x in (a, b, c, d)]
    df = sum(v) ** 2 / sum(
        x * x / (len(g) - 1) for x, g in zip(v, (a, b, c, d)))
    half = sps.t.ppf(0.975, df) * sum(v) ** 0.5
    value = statistics.fmean(a) - statistics.fmean(b) - statistics.fmean(c) + statistics.fmean(d)
    assert four.value == pytest.approx(value) and four.df == pytest.approx(df)
    assert four.ci == pytest.approx((value - half, value + half))
    assert stats.contrast([a, [1.0]], [1, -1]).ci is None  # one seed: no interval


def test_the_depth_claims_are_the_differences_of_the_networks_errors_with_verdicts(tmp_path):
    rows = {r["claim"]: r for r in depth.claims(depth.depth_groups(_study()))}
    assert list(rows) == ["D1", "D2", "D3 (test)", "D3 (train)", "D4 (train)", "D4 (test)", "D5 (train)", "D5 (test)"]
    err = {m: {s: [v[i][k] for i in range(3)] for k, s in enumerate(("train", "test"))} for m, v in FINAL.items()}
    mean = lambda m, s: statistics.fmean(err[m][s])  # noqa: E731
    assert rows["D1"]["estimate"] == pytest.approx(mean("plain56", "train") - mean("plain20", "train"))
    assert rows["D1"]["ci"] == pytest.approx(stats.welch(err["plain56"]["train"], err["plain20"]["train"]).ci)
    assert rows["D3 (test)"]["estimate"] == pytest.approx(mean("resnet20", "test") - mean("resnet56", "test"))
    gap = lambda d, s: mean(f"plain{d}", s) - mean(f"resnet{d}", s)  # noqa: E731
    assert rows["D5 (test)"]["estimate"] == pytest.approx(gap(56, "test") - gap(20, "test"))
    assert rows["D5 (test)"]["ours_a"] == pytest.approx(gap(56, "test"))
    assert rows["D5 (test)"]["a"] == "plain56 − resnet56" and rows["D5 (test)"]["b"] == "plain20 − resnet20"
    assert all(r["verdict"] == "holds" for r in rows.values()), [(k, r["interval"]) for k, r in rows.items()]
    # He et al.'s values where they give one: Table 6 for the ResNets; the plain nets' test error read off Fig. 6
    assert (rows["D3 (test)"]["published_a"], rows["D3 (test)"]["published_b"]) == (8.75, 6.97)
    assert rows["D1"]["published_a"] is None and rows["D2"]["published_a"] == 13.5
    # the other way round, the same numbers contradict the claim
    flipped = {m: v for m, v in FINAL.items()} | {"plain56": FINAL["plain20"], "plain20": FINAL["plain56"]}
    runs = [history_result(m, s, [50, v[s][0]], [45, v[s][1]]) for m, v in flipped.items() for s in range(3)]
    assert {r["claim"]: r for r in depth.claims(depth.depth_groups(runs))}["D1"]["verdict"] == "contradicted"


def test_a_claim_whose_network_has_not_finished_stands_unresolved_naming_it(tmp_path):
    runs = [r for r in _study() if r["config"]["model"]["name"] != "plain56"]
    rows = {r["claim"]: r for r in depth.claims(depth.depth_groups(runs))}
    assert len(rows) == 8  # every claim listed while the campaign runs
    waiting = {k for k, r in rows.items() if r["why"] == "no finished run of plain56 yet"}
    assert waiting == {"D1", "D2", "D4 (train)", "D4 (test)", "D5 (train)", "D5 (test)"}
    assert all(rows[k]["estimate"] is None and rows[k]["verdict"] == "not resolved" for k in waiting)
    assert rows["D3 (test)"]["verdict"] == "holds" and rows["D1"]["ours_b"] == pytest.approx(
        statistics.fmean(v[0] for v in FINAL["plain20"]))
    runs[0]["history"][1]["machine"] = "CPU A (avx2)"  # its first epoch saved before rows named their machine
    _write_study(tmp_path, runs, {"plain20": 1.5, "resnet20": 1.1, "resnet56": 1.2})
    write_report(tmp_path)
    assert f"| {runs[0]['run']} | 1 | 50 | 1 epoch unrecorded; CPU A (avx2) 1 epoch |" in \
        (tmp_path / "report.md").read_text()  # the Runs table says what each run's epochs ran on
    assert any(ln.startswith("| D1 | cifar10 | plain56 | plain20 |") and "no finished run of plain56" in ln
               for ln in (tmp_path / "report.md").read_text().splitlines())
    with open(tmp_path / "claims.csv") as f:
        csv_rows = {r["claim"]: r for r in csv.DictReader(f)}
    assert csv_rows["D1"]["verdict"] == "not resolved" and csv_rows["D1"]["estimate"] == ""
    # the gradient claims too: the table and figure show the deepest finished pair (20), G1-G2 wait for plain56
    assert (tmp_path / "depth_grads_cifar10.png").exists()
    assert {csv_rows[g]["why"] for g in ("G1", "G2")} == {"no finished run of plain56 with its layer norms yet"}
    assert csv_rows["G2"]["ours_b"] != "" and csv_rows["G2"]["estimate"] == ""  # resnet56's value, no difference


def test_110_layers_at_one_seed_get_values_and_no_claims(tmp_path):
    extra = [history_result("resnet110", 0, [50, 3.0], [45, 7.0]), history_result("plain110", 0, [50, 20.0], [45, 25.0])]
    lines, rows, _ = depth.depth_section(_study(extra=extra), tmp_path)
    assert not any("110" in r["a"] + r["b"] for r in rows)
    assert any(ln.startswith("| cifar10 | 110 | 20.00 (1) | 25.00 (1) | 3.00 (1) | 7.00 (1) |")
               for ln in "\n".join(lines).splitlines())


def _write_study(folder, runs, decay):
    """Each run's results.json and a layer_norms.npz: 3 convolutions, whose gradient shrinks toward the input by
    ``decay[model]`` per layer."""
    names = ["stem", "stem_norm", "stage0_block0/conv0", "stage0_block0/norm0", "stage0_block0/conv1", "head"]
    for r in runs:
        d = folder / r["run"]
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({**r, "schema": SCHEMA, "environment": {}}))
        steps = np.arange(0, 20, 2)
        k = decay[r["config"]["model"]["name"]] * (1 + 0.05 * r["config"]["seed"])
        grad = np.stack([np.full(len(steps), 1.0 / k ** (2 - i)) for i in (0, 0, 1, 1, 2, 2)], axis=1)
        grad = grad * np.exp(-0.01 * steps)[:, None]
        np.savez(d / "layer_norms.npz", names=np.array(names), steps=steps, grad=grad, param=np.ones_like(grad),
                 update=grad)


def test_gradients_within_the_layers_are_a_figure_a_table_and_claims(tmp_path):
    _write_study(tmp_path, _study(), {"plain20": 1.5, "resnet20": 1.1, "plain56": 10.0, "resnet56": 1.2})
    written = write_report(tmp_path)
    assert (tmp_path / "depth_grads_cifar10.png") in written
    report = (tmp_path / "report.md").read_text()
    assert "### Gradients within the layers (cifar10)" in report and "depth_grads_cifar10.png" in report
    with open(tmp_path / "claims.csv") as f:
        rows = {r["claim"]: r for r in csv.DictReader(f)}
    assert {"D1", "D5 (test)", "G1", "G2"} <= rows.keys()
    # log10(last / first) = 2 log10(k) at each seed's k: plain56's is about 2, resnet56's about 0.16
    assert float(rows["G1"]["ours_a"]) == pytest.approx(statistics.fmean(2 * np.log10(10 * (1 + 0.05 * s))
                                                                          for s in range(3)))
    assert rows["G1"]["verdict"] == rows["G2"]["verdict"] == "holds"
    # at step 0 the first convolution's gradient over the last's is 1 / k^2: the table and the sentence give it
    at_init = 10 ** statistics.fmean(-2 * np.log10(10 * (1 + 0.05 * s)) for s in range(3))
    said = re.search(r"At initialization [^\n]*? plain56: ([0-9.e-]+)x; resnet56: ([0-9.e-]+)x", report)
    assert said and float(said[1]) == pytest.approx(at_init, rel=1e-2) and float(said[2]) > at_init
    assert "kernel norm at the end of the first epoch over its initial one: plain56: 1x; resnet56: 1x." in report
    table = depth.gradient_rows(depth._layers(depth.depth_groups(_study()), "cifar10", 56, tmp_path), 3)
    first = next(r for r in table if r["network"] == "plain56" and r["layer"].startswith("first"))
    assert 10 ** first["step 0"].value == pytest.approx(at_init)
    assert "| gradient norm at initialization (step 0) | gradient norm, epoch 1 |" in report
    fig = depth.depth_grads_figure({f"{k}56": [depth.layer_series(r, tmp_path) for r in _study()
                                               if r["config"]["model"]["name"] == f"{k}56"] for k in ("plain", "resnet")},
                                   "cifar10")
    first = fig.axes[0].get_lines()[0]  # plain56's first convolution, the geometric mean over seeds, in epochs
    assert first.get_xdata()[0] == pytest.approx(0.1) and first.get_ydata()[0] == pytest.approx(
        statistics.fmean(-2 * np.log10(10 * (1 + 0.05 * s)) for s in range(3)))
    cross = fig.axes[0].collections[0].get_offsets()[0]  # plain56's first convolution at initialization
    assert cross[0] == 0 and cross[1] == pytest.approx(np.log10(at_init))


def test_depth_figures_draw_epochs_seed_bands_and_interval_bars():
    groups = depth.depth_groups(_study())
    curves = depth.depth_curves_figure(groups, "cifar10")
    left, right = curves.axes
    assert left.get_title() == "plain networks" and right.get_title() == "resnet networks"
    assert list(left.get_lines()[0].get_xdata()) == [1, 2]  # epochs
    assert len(left.collections) == 4  # a band per depth and split: three seeds each
    bars = depth.depth_error_figure(groups, "cifar10")
    train_ax = bars.axes[0]
    plain = next(c for c in train_ax.containers if "plain" in c.get_label())
    est = stats.mean_interval([v[0] for v in FINAL["plain56"]])
    segs = plain[2][0].get_segments()  # the vertical bars: 95% interval around the mean
    assert segs[1][:, 1] == pytest.approx(est.ci)


def test_the_report_says_how_the_schedule_deviates_from_he_et_al():
    """Issue 47: 30 epochs of cosine after a 2-epoch warm-up, not 64k steps with /10 at 32k and 48k: said."""
    r = history_result("plain20", 0, [50] * 30, [40] * 30, batch=128)
    r["history"] = [dict(h, train_examples=49920) for h in r["history"]]  # 390 steps an epoch
    r["config"]["schedule"] = {"name": "cosine", "warmup_steps": 780, "final_fraction": 0.0}
    line = depth.protocol_line(r)
    assert "deviation" in line and "11,700 steps (18% of theirs)" in line and "warm-up over 780 steps" in line
    assert "cosine decay to zero" in line and "budgeted" in line
    r["config"]["schedule"] = {"name": "piecewise", "boundaries": [32000, 48000], "factor": 0.1}
    r["history"] = r["history"] * 6  # 70,200 steps
    assert depth.protocol_line(r).startswith("Schedule: He et al.'s own")


def test_the_half_distance_is_where_the_cosine_first_falls_below_a_half_in_log_distance():
    d = np.array([1e-3, 1e-2, 1e-1, 1.0])
    assert depth.half_distance(d, np.array([0.9, 0.7, 0.3, 0.6])) == pytest.approx(10 ** -1.5)  # halfway, first fall
    assert depth.half_distance(d, np.array([0.9, 0.8, 0.7, 0.6])) == float("inf")
    assert depth.half_distance(d, np.array([0.4, 0.8, 0.7, 0.6])) == 1e-3


def _write_shattering(folder, runs, half):
    """shattering.csv whose cosine along every line of ``model`` is 1 / (1 + d / half[model][state]) (falls to 0.5 at
    exactly that distance), 3 images a run, a run of another study mixed in."""
    distances = np.logspace(-6, 0, 25)
    with open(folder / depth.SHATTERING_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "model", "seed", "state", "image", "distance", "cosine"])
        for r in runs + [history_result("plain56", 7, [1], [1])]:
            m = r["config"]["model"]["name"]
            for state, h in half[m].items():
                for image in range(3):
                    w.writerows((r["run"], m, r["config"]["seed"], state, image, f"{x:.6g}",
                                 f"{1 / (1 + x / h) - 0.001 * image:.5f}") for x in distances)


def test_shattered_gradients_are_a_table_a_sentence_and_a_figure_from_the_file_alone(tmp_path):
    """The report reads experiments.shattering's file: per network and state the mean cosine at two distances and
    the distance where it falls to 0.5, with intervals over the lines of every seed, and the plain / residual ratio;
    runs not in the report are left out."""
    runs = _study(seeds=(0, 1))
    _write_study(tmp_path, runs, {"plain20": 1.5, "resnet20": 1.1, "plain56": 10.0, "resnet56": 1.2})
    half = {"plain20": {"init": 1e-2, "trained": 0.2}, "resnet20": {"init": 5e-2, "trained": 0.2},
            "plain56": {"init": 3e-5, "trained": 0.2}, "resnet56": {"init": 3e-2, "trained": 0.2}}
    _write_shattering(tmp_path, runs, half)
    assert (tmp_path / "shattering_cifar10.png") in write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    distances, data = depth.read_shattering(tmp_path, {r["run"] for r in runs})
    assert data[("plain56", "init")].shape == (6, 25)  # 3 lines x 2 seeds; seed 7 is not in this report
    rows = {(r["network"], r["state"]): r for r in depth.shattering_rows(distances, data)}
    for (model, state), r in rows.items():  # 1/(1+d/h) - 0.001 i crosses 0.5 a little before h, by interpolation
        assert 10 ** r["half"].value == pytest.approx(half[model][state], rel=0.05), (model, state)
        assert r["half"].ci[0] < r["half"].value < r["half"].ci[1]
        assert r["at"][1e-2].value == pytest.approx(1 / (1 + 1e-2 / half[model][state]) - 0.001, abs=1e-4)
    assert "| plain56 | init | 6 | 0.2" in report and "### Shattered gradients" in report
    ratio = re.search(r"plain56 at initialization: ([0-9.e+]+)x; plain56 trained: ([0-9.]+)x", report)
    assert ratio and float(ratio[1]) == pytest.approx(1000, rel=0.1) and float(ratio[2]) == pytest.approx(1, rel=0.05)
    fig = depth.shattering_figure(distances, data, "cifar10")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    init = lines["plain56, init (6 lines)"]
    assert init.get_linestyle() == "--" and lines["plain56, trained (6 lines)"].get_linestyle() == "-"
    np.testing.assert_allclose(init.get_ydata(), data[("plain56", "init")].mean(axis=0))
    assert (tmp_path / "shattering_training_cifar10.png") not in write_report(tmp_path)  # no epoch kept: no such figure
    (tmp_path / depth.SHATTERING_FILE).unlink()  # without the file: no section, no figure
    assert (tmp_path / "shattering_cifar10.png") not in write_report(tmp_path)
    assert "Shattered" not in (tmp_path / "report.md").read_text()


def test_shattering_during_training_is_in_epoch_order_with_its_own_figure(tmp_path):
    """States of kept epochs ("epoch E", experiments.shattering --epochs) come between initialization and trained in
    the table, in the order of training (epoch 16 after epoch 4), and get a figure of the half distance against the
    epoch for the networks measured during training: plain dashed, residual solid, one colour per depth."""
    runs = [history_result(m, s, [50] * 29 + [v[s][0]], [45] * 29 + [v[s][1]]) for m, v in FINAL.items()
            for s in (0, 1)]  # 30 epochs
    _write_study(tmp_path, runs, {"plain20": 1.5, "resnet20": 1.1, "plain56": 10.0, "resnet56": 1.2})
    during = {"init": 3e-5, "epoch 1": 1e-3, "epoch 4": 1e-2, "epoch 16": 0.1, "trained": 0.2}
    half = {"plain20": {"init": 1e-2, "trained": 0.2}, "resnet20": {"init": 5e-2, "epoch 16": 0.1, "trained": 0.2},
            "plain56": during, "resnet56": {s: 3e-2 for s in during}}
    _write_shattering(tmp_path, runs, half)
    assert (tmp_path / "shattering_training_cifar10.png") in write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    states = re.findall(r"^\| plain56 \| ([a-z0-9 ]+) \| 6 \|", report, re.M)
    assert states == ["init", "epoch 1", "epoch 4", "epoch 16", "trained"]
    assert re.search(r"plain56 epoch 4: ([0-9.]+)x", report)[1] == "3"  # 3e-2 / 1e-2
    distances, data = depth.read_shattering(tmp_path, {r["run"] for r in runs})
    fig = depth.shattering_training_figure(distances, data, "cifar10", 30)
    ax = fig.axes[0]
    points = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: line, caps, bars
    assert set(points) == {"_plain56", "_resnet56", "_resnet20"}  # plain20 kept no epoch: no line between 2 points
    assert list(points["_plain56"].get_xdata()) == [0, 1, 4, 16, 30]
    np.testing.assert_allclose(points["_plain56"].get_ydata(), list(during.values()), rtol=0.05)
    legend = dict(zip((t.get_text() for t in ax.get_legend().get_texts()), ax.get_legend().legend_handles))
    assert sorted(legend) == ["plain56", "resnet20", "resnet56"]
    assert legend["plain56"].get_linestyle() == "--" and legend["resnet56"].get_linestyle() == "-"
    assert points["_plain56"].get_color() == points["_resnet56"].get_color() != points["_resnet20"].get_color()
    spans = [(tuple(line.get_xdata()), line.get_linestyle()) for line in ax.get_lines()
             if line.get_label() == "_resnet20 span"]  # init to epoch 16 skips epochs 1 and 4, where others were measured
    assert spans == [((0, 16), ":"), ((16, 30), "-")]
    assert {line.get_linestyle() for line in ax.get_lines() if line.get_label() == "_plain56 span"} == {"--"}
