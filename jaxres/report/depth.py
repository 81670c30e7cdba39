"""He et al.'s degradation experiment (2015, section 4.2): their plain and residual CIFAR-10 networks grouped by
depth, the table beside their Table 6, the depth claims with Welch intervals, the per-layer gradients of the
deepest pair, and the figures a reader of their Fig. 6 recognizes. From results files alone, no JAX.

The claims (``CLAIMS``), each "a - b > 0" over the seeds of each network, errors in percent:

* D1 (degradation): plain56's final training error is above plain20's.
* D2: plain56's test error is above plain20's.
* D3 (depth helps with shortcuts): resnet56's test error is below resnet20's, and its training error too.
* D4: at 56 layers the residual network beats its plain twin, in training and in test error.
* D5: the shortcut's gain grows with depth: (plain56 - resnet56) - (plain20 - resnet20) > 0.
* G1, G2 (the seed's wish to monitor gradients within the layers): over the whole run, the deeper plain
  network's first convolution gets less gradient than its last (log10 of last / first > 0), and more so than
  in its residual twin.

Verdicts as the seed's claims (``jaxres.claims.verdict_of``): *holds* where the 95% interval lies above 0,
*contradicted* below, *not resolved* where it spans 0 or a network has fewer than two seeds. Networks deeper
than 56 layers (110) get values, no claims.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jaxres import catalog, stats
from jaxres.claims import missing_seeds, verdict_of
from jaxres.config import flatten
from jaxres.report.figures import _conv_layers, _legend, _marks, _pyplot, _save, _whole_ticks
from jaxres.report.runs import GROUP_EXCLUDE, mean_std
from jaxres.results import LAYER_FILE, load_layer_norms

# He et al. 2015, "Deep residual learning for image recognition", Table 6: CIFAR-10 test error (%) of their
# ResNets trained on the full 50k training images (for 110 layers: best of 5 runs; mean 6.61 +- 0.16).
HE2015_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
# They give no number for their plain networks: final test error (%) read by eye off their Fig. 6 (left; the
# same runs as Fig. 1), to about a point.
HE2015_PLAIN_TEST_ERROR_READ = {20: 9.5, 56: 13.5}
DEPTH_KINDS = ("plain", "resnet")
SHALLOW, DEEP = 20, 56  # the pair of depths the claims compare
CLAIMS = {
    "D1": f"degradation: plain{DEEP}'s final training error is above plain{SHALLOW}'s",
    "D2": f"plain{DEEP}'s final test error is above plain{SHALLOW}'s",
    "D3": f"depth helps with shortcuts: resnet{DEEP}'s test error is below resnet{SHALLOW}'s, and its training "
          "error too",
    "D4": f"at {DEEP} layers the residual network beats its plain twin, in training and in test error",
    "D5": f"the shortcut's gain grows with depth: (plain - resnet) error at {DEEP} is above the same at {SHALLOW}",
    "G1": f"plain{DEEP}'s gradient shrinks toward the input: log10(last conv / first conv gradient norm), mean over "
          "the recorded steps, > 0",
    "G2": f"more than in resnet{DEEP}: that log10 ratio of plain{DEEP} minus resnet{DEEP}'s > 0",
}


def _depth_of(model: str) -> tuple[str, int] | None:
    """("plain" | "resnet", depth) for He et al.'s CIFAR networks (their catalog facts), else None."""
    preset = catalog.PRESETS.get(model)
    return (preset.kind, preset.depth) if preset is not None and preset.family == "he" else None


def _iterations(r: dict[str, Any]) -> list[int]:
    """The training step reached at the end of each epoch of run ``r``."""
    batch = r["config"]["data"]["batch_size"]
    return list(np.cumsum([h["train_examples"] // batch for h in r["history"]]).tolist())


Groups = dict[tuple[str, str, int], list[dict[str, Any]]]


def depth_groups(results: list[dict[str, Any]]) -> Groups:
    """He et al.'s networks grouped by (dataset, kind, depth); only where the runs differ in nothing else
    than the model and the seed (else a depth figure would mix settings)."""
    groups: Groups = defaultdict(list)
    rests = set()
    for r in results:
        kd = _depth_of(r["config"]["model"]["name"])
        if kd is not None:
            flat = flatten(r["config"])
            rests.add(json.dumps({k: v for k, v in flat.items() if k not in GROUP_EXCLUDE + ("model.name",)},
                                 sort_keys=True))
            groups[(r["config"]["data"]["name"], *kd)].append(r)
    return dict(groups) if len(rests) == 1 else {}


def errors(runs: list[dict[str, Any]] | None, split: str) -> list[float]:
    """Final ``split`` error (%) of each run that did not diverge."""
    return [100 * (1 - r["final"][f"{split}_accuracy"]) for r in runs or [] if not r.get("diverged")]


def depth_markdown(groups: Groups) -> str:
    """Final train and test error (%) per depth, plain beside residual, He et al.'s Table 6 beside ours."""
    def err(runs: list[dict] | None, split: str) -> str:
        if not runs:
            return ""
        ok = errors(runs, split)
        if not ok:
            return "diverged"
        m, sd = mean_std(ok)
        return (f"{m:.2f} ± {sd:.2f}" if len(ok) > 1 else f"{m:.2f}") + f" ({len(ok)})"

    lines = ["| dataset | depth | plain train err % | plain test err % | resnet train err % | resnet test err % "
             "| He et al. plain test err % (read off Fig. 6) | He et al. resnet test err % (Table 6) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for dataset, depth in sorted({(d, n) for d, _, n in groups}):
        cells = [err(groups.get((dataset, kind, depth)), split) for kind in DEPTH_KINDS for split in ("train", "test")]
        plain = HE2015_PLAIN_TEST_ERROR_READ.get(depth) if dataset == "cifar10" else None
        he = HE2015_TEST_ERROR.get(depth) if dataset == "cifar10" else None
        lines.append(f"| {dataset} | {depth} | " + " | ".join(cells) + f" | {'' if plain is None else f'≈{plain:g}'} "
                     f"| {'' if he is None else f'{he:.2f}'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ claims
def _he(kind: str, depth: int, split: str) -> float | None:
    if split != "test":
        return None
    return (HE2015_TEST_ERROR if kind == "resnet" else HE2015_PLAIN_TEST_ERROR_READ).get(depth)


def _row(claim: str, dataset: str, split: str, a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...],
         groups: Groups) -> dict[str, Any]:
    """One claim "a - b > 0" on ``split`` error, where a side is one network or the gap between two (first minus
    second). Where a network has no finished run yet the row stands, without values: not resolved, naming it."""
    sides = [[errors(groups.get((dataset, *net)), split) for net in side] for side in (a, b)]
    weights = [w for side, sign in zip((a, b), (1, -1)) for w in ((sign,) if len(side) == 1 else (sign, -sign))]
    absent = [f"{k}{n}" for side, xs in zip((a, b), sides) for (k, n), x in zip(side, xs) if not x]
    if absent:
        est, verdict, why = None, "not resolved", f"no finished run of {', '.join(absent)} yet"
    else:
        est = stats.contrast([x for side in sides for x in side], weights)
        verdict, why = verdict_of(est, 0.0)
        why += missing_seeds({f"{k}{n}": [r["config"]["seed"] for r in groups[(dataset, k, n)]
                                          if not r.get("diverged")] for k, n in a + b})

    def name(side):
        return " − ".join(f"{k}{n}" for k, n in side)

    def ours(side, xs):
        if not all(xs):
            return None
        return statistics.fmean(xs[0]) - (statistics.fmean(xs[1]) if len(side) > 1 else 0.0)

    def he(side):
        vals = [_he(k, n, split) for k, n in side]
        return None if None in vals else vals[0] - (vals[1] if len(vals) > 1 else 0.0)

    return {"claim": f"{claim} ({split})" if claim in ("D3", "D4", "D5") else claim, "dataset": dataset,
            "setting": {}, "a": name(a), "b": name(b), "statistic": f"final {split} error (%)", "test": "a - b > 0",
            "n_a": min(len(x) for x in sides[0]), "n_b": min(len(x) for x in sides[1]),
            "ours_a": ours(a, sides[0]), "ours_b": ours(b, sides[1]), "published_a": he(a), "published_b": he(b),
            **_estimate(est, 2), "verdict": verdict, "why": why}


def _estimate(est: stats.Estimate | None, digits: int) -> dict[str, Any]:
    """A claim row's estimate, interval and its text; all empty where the claim has no value yet."""
    if est is None:
        return {"estimate": None, "ci": None, "interval": ""}
    return {"estimate": est.value, "ci": est.ci, "interval": "" if est.ci is None else
            f"[{est.ci[0]:+.{digits}f}, {est.ci[1]:+.{digits}f}]"}


def claims(groups: Groups) -> list[dict[str, Any]]:
    """D1-D5 for each dataset in ``groups``; a claim whose networks have not all finished a run is listed, not
    resolved, naming the ones it waits for."""
    p20, p56, r20, r56 = ("plain", SHALLOW), ("plain", DEEP), ("resnet", SHALLOW), ("resnet", DEEP)
    specs = [("D1", "train", (p56,), (p20,)), ("D2", "test", (p56,), (p20,)),
             ("D3", "test", (r20,), (r56,)), ("D3", "train", (r20,), (r56,)),
             ("D4", "train", (p56,), (r56,)), ("D4", "test", (p56,), (r56,)),
             ("D5", "train", (p56, r56), (p20, r20)), ("D5", "test", (p56, r56), (p20, r20))]
    rows = []
    for dataset in sorted({d for d, _, _ in groups}):
        rows += [_row(c, dataset, split, a, b, groups) for c, split, a, b in specs]
    return rows


# ------------------------------------------------------------------ gradients within the layers
def layer_series(run: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    """A run's first, middle and last convolution: names, recorded steps (in epochs) and their gradient and
    parameter norms; None where the run recorded none (or its file is damaged: the report warns of that)."""
    loaded = load_layer_norms(folder / run["run"] / LAYER_FILE)
    if loaded is None or not len(loaded[1]["steps"]):
        return None
    names, series = loaded
    convs = _conv_layers(names)
    if not convs:
        return None
    picks = list(dict.fromkeys([convs[0], convs[len(convs) // 2], convs[-1]]))
    per_epoch = run["history"][0]["train_examples"] // run["config"]["data"]["batch_size"]
    return {"names": [names[i] for i in picks], "steps": series["steps"], "epochs": (series["steps"] + 1) / per_epoch,
            "grad": series["grad"][:, picks], "param": series["param"][:, picks]}


def _log_ratio(s: dict[str, Any]) -> float:
    """Mean over the recorded steps of log10(last conv's gradient norm / first conv's)."""
    return float(np.mean(np.log10(s["grad"][:, -1]) - np.log10(s["grad"][:, 0])))


def _from_init(runs: list[dict[str, Any]]) -> bool:
    """Whether every run recorded step 0, its gradients at initialization."""
    return all(s["steps"][0] == 0 for s in runs)


def _window(s: dict[str, Any], epoch: int) -> np.ndarray:
    return (s["epochs"] > epoch - 1) & (s["epochs"] <= epoch)


def gradient_rows(layers: dict[str, list[dict[str, Any]]], epochs: int) -> list[dict[str, Any]]:
    """Per network and picked layer, the gradient norm at initialization (step 0, where every run recorded it),
    then its geometric mean over an epoch's recorded steps in the first, middle and last epoch, and the gradient
    relative to the parameter norm in the last; mean over seeds with a 95% interval (of log10, shown back as
    norms)."""
    rows = []
    marks = sorted({1, max(1, (epochs + 1) // 2), epochs})
    for net, runs in layers.items():
        for j, role in enumerate(("first", "middle", "last")[:len(runs[0]["names"])]):
            row = {"network": net, "layer": f"{role} ({runs[0]['names'][j]})", "seeds": len(runs)}
            if _from_init(runs):
                row["step 0"] = stats.mean_interval([float(np.log10(s["grad"][0, j])) for s in runs])
            for e in marks:
                logs = [float(np.mean(np.log10(s["grad"][_window(s, e), j]))) for s in runs if _window(s, e).any()]
                row[f"epoch {e}"] = stats.mean_interval(logs) if logs else None
            rel = [float(np.mean(np.log10(s["grad"][_window(s, epochs), j] / s["param"][_window(s, epochs), j])))
                   for s in runs if _window(s, epochs).any()]
            row[f"relative, epoch {epochs}"] = stats.mean_interval(rel) if rel else None
            rows.append(row)
    return rows


def _norm_cell(est: stats.Estimate | None) -> str:
    if est is None:
        return ""
    ci = "" if est.ci is None else f" [{10 ** est.ci[0]:.3g}, {10 ** est.ci[1]:.3g}]"
    return f"{10 ** est.value:.3g}{ci}"


def gradient_claims(layers: dict[str, list[dict[str, Any]]], dataset: str) -> list[dict[str, Any]]:
    """G1 and G2 from the 56-layer networks' recorded layers; while one has none yet, both stand unresolved,
    naming it."""
    plain, resnet = (f"{k}{DEEP}" for k in DEPTH_KINDS)
    xp, xr = ([_log_ratio(s) for s in layers.get(net, [])] for net in (plain, resnet))
    absent = [net for net, x in ((plain, xp), (resnet, xr)) if not x]
    rows = []
    for claim, b, needs in (("G1", "", xp), ("G2", resnet, xp and xr)):
        if not needs:
            est, verdict = None, "not resolved"
            why = f"no finished run of {', '.join(absent if claim == 'G2' else [plain])} with its layer norms yet"
        else:
            est = stats.mean_interval(xp) if claim == "G1" else stats.welch(xp, xr)
            verdict, why = verdict_of(est, 0.0)
        rows.append({"claim": claim, "dataset": dataset, "setting": {}, "a": plain, "b": b,
                     "statistic": "log10(last conv / first conv gradient norm), mean over the recorded steps",
                     "test": "a > 0" if claim == "G1" else "a - b > 0", "n_a": len(xp),
                     "n_b": len(xr) if b else None, "ours_a": statistics.fmean(xp) if xp else None,
                     "ours_b": statistics.fmean(xr) if b and xr else None, "published_a": None,
                     "published_b": None, **_estimate(est, 3), "verdict": verdict, "why": why})
    return rows


# ------------------------------------------------------------------ figures
def _band(ax, x, ys: list[list[float]], **style) -> None:
    """The mean of ``ys`` as a line, their spread over seeds (min to max) as a band where there are several."""
    arr = np.asarray(ys, dtype=float)
    ax.plot(x, arr.mean(axis=0), **style, **_marks(len(x)))
    if len(ys) > 1:
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), color=style.get("color"), alpha=0.15, lw=0)


def depth_curves_figure(groups: Groups, dataset: str):
    """He et al.'s Fig. 6: training error (thin) and test error (bold) against epochs, one colour per depth, mean
    over seeds with their spread as a band; plain networks left, residual right."""
    plt = _pyplot()
    depths = sorted({n for d, _, n in groups if d == dataset})
    colors = {n: f"C{i}" for i, n in enumerate(depths)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind in zip(axes, DEPTH_KINDS):
        for n in depths:
            runs = [r for r in groups.get((dataset, kind, n), []) if not r.get("diverged")]
            if not runs:
                continue
            length = min(len(r["history"]) for r in runs)
            x = [h["epoch"] for h in runs[0]["history"][:length]]
            for split, width in (("train", 0.9), ("test", 2.2)):
                ys = [[100 * (1 - h[f"{split}_accuracy"]) for h in r["history"][:length]] for r in runs]
                seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
                _band(ax, x, ys, color=colors[n], lw=width, label=f"{kind}-{n}{seeds}" if split == "test" else None)
        ax.set_title(f"{kind} networks", fontsize=10)
        ax.set_xlabel("epoch")
        _whole_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(f"{dataset}: training error (thin, running mean over each epoch) and test error (bold), mean over "
                 "seeds, band from the lowest to the highest seed", fontsize=10)
    fig.tight_layout()
    return fig


def depth_error_figure(groups: Groups, dataset: str):
    """Final training and test error against depth, plain and residual: mean over seeds with its 95% interval
    (a point alone with one seed), He et al.'s values as open grey markers."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, split in zip(axes, ("train", "test")):
        for kind, marker in zip(DEPTH_KINDS, ("s", "o")):
            pts = []
            for n in sorted({n for d, k, n in groups if d == dataset and k == kind}):
                est = stats.mean_interval(errs) if (errs := errors(groups[(dataset, kind, n)], split)) else None
                if est is not None:
                    lo, hi = est.ci or (est.value, est.value)
                    pts.append((n, est.value, est.value - lo, hi - est.value))
            if pts:
                x, m, below, above = zip(*pts)
                ax.errorbar(x, m, yerr=[below, above], marker=marker, capsize=3, label=f"{kind} (ours, 95% interval)")
        if dataset == "cifar10" and split == "test":
            for table, marker, label in ((HE2015_PLAIN_TEST_ERROR_READ, "s", "plain, He et al. (read off Fig. 6)"),
                                         (HE2015_TEST_ERROR, "o", "resnet, He et al. (Table 6)")):
                ax.plot(list(table), list(table.values()), marker + "--", mfc="none", color="gray", label=label)
        ax.set_xlabel("depth (layers)")
        ax.set_ylabel(f"final {split} error (%)")
        ax.set_title(f"{dataset}: {split} error against depth", fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8)
    fig.tight_layout()
    return fig


def depth_grads_figure(layers: dict[str, list[dict[str, Any]]], dataset: str):
    """The first, middle and last convolution's gradient norm against epochs, one panel per network, on a shared
    log axis: each epoch's geometric mean over its recorded steps (mean over seeds, their spread as a band),
    over the recorded steps themselves, faint, and step 0 (initialization) as a cross."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4.2), sharey=True, squeeze=False)
    for ax, (net, runs) in zip(axes[0], layers.items()):
        length = min(len(s["epochs"]) for s in runs)
        x = runs[0]["epochs"][:length]
        epochs = range(1, int(np.ceil(x[-1] - 1e-9)) + 1)
        for j, (role, style) in enumerate(zip(("first", "middle", "last"), ("-", "--", ":"))):
            if j < len(runs[0]["names"]):
                ax.plot(x, np.mean([np.log10(s["grad"][:length, j]) for s in runs], axis=0), color=f"C{j}",
                        lw=0.5, alpha=0.25)
                if _from_init(runs):  # initialization, before any update
                    ax.scatter([0], [np.mean([np.log10(s["grad"][0, j]) for s in runs])], marker="x", s=40,
                               color=f"C{j}", zorder=3, label="step 0 (initialization)" if j == 0 else None)
                ys = [[np.log10(s["grad"][_window(s, e), j]).mean() for e in epochs] for s in runs]
                _band(ax, list(epochs), ys, ls=style, lw=2, color=f"C{j}", label=f"{role}: {runs[0]['names'][j]}")
        ax.set_title(f"{net} ({len(runs)} seed{'s' if len(runs) > 1 else ''})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    axes[0][0].set_ylabel("log10 L2 norm of the layer's gradient")
    fig.suptitle(f"{dataset}: gradient norm within the layers, first, middle and last convolution", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ shattered gradients
SHATTERING_FILE = "shattering.csv"  # written by ``python -m experiments.shattering``
SHATTERING_AT = (1e-4, 1e-2)  # distances (fractions of the image's norm) whose cosines the table gives


def read_shattering(folder: Path, runs: set[str]) -> tuple[np.ndarray, dict[tuple[str, str], np.ndarray]] | None:
    """The distances, and (model, state) -> lines x distances cosines (the images of every seed stacked), from
    ``folder``/shattering.csv, for the runs of this report; None without the file."""
    import csv

    path = folder / SHATTERING_FILE
    if not path.is_file():
        return None
    cells: dict[tuple[str, str], dict[tuple[str, int], dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["run"] in runs:
                cells[(row["model"], row["state"])][(row["run"], int(row["image"]))][float(row["distance"])] = \
                    float(row["cosine"])
    if not cells:
        return None
    distances = sorted({d for per in cells.values() for line in per.values() for d in line})
    return np.array(distances), {key: np.array([[line.get(d, np.nan) for d in distances] for line in per.values()])
                                 for key, per in sorted(cells.items(), key=lambda kv: (kv[0][0], _when(kv[0][1])))}


def _when(state: str, final: float = float("inf")) -> float:
    """A state's place in training: 0 at "init", E at "epoch E", ``final`` when "trained"."""
    return 0.0 if state == "init" else final if state == "trained" else float(state.split()[-1])


def half_distance(distances: np.ndarray, cos: np.ndarray) -> float:
    """The distance at which one line's cosine first falls below 0.5, interpolated in log distance; inf where it
    never does, the first distance where it already has."""
    below = np.flatnonzero(cos < 0.5)
    if not below.size:
        return float("inf")
    i = below[0]
    if i == 0:
        return float(distances[0])
    t = (cos[i - 1] - 0.5) / (cos[i - 1] - cos[i])
    return float(10 ** (np.log10(distances[i - 1]) + t * np.log10(distances[i] / distances[i - 1])))


def shattering_rows(distances: np.ndarray, data: dict[tuple[str, str], np.ndarray]) -> list[dict[str, Any]]:
    """Per network and state: the images, the mean cosine at ``SHATTERING_AT`` and the geometric mean half
    distance, each with its 95% interval over the images."""
    rows = []
    for (model, state), cos in data.items():
        half = np.array([half_distance(distances, line) for line in cos])
        at = {d: stats.mean_interval(cos[:, int(np.argmin(abs(np.log10(distances / d))))].tolist())
              for d in SHATTERING_AT}
        finite = half[np.isfinite(half)]
        log_half = stats.mean_interval(np.log10(finite).tolist()) if finite.size == half.size else None
        rows.append({"network": model, "state": state, "images": len(cos), "at": at, "half": log_half})
    return rows


def _cos_cell(est: stats.Estimate) -> str:
    return f"{est.value:.3f}" + (f" [{est.ci[0]:.3f}, {est.ci[1]:.3f}]" if est.ci else "")


def _half_cell(est: stats.Estimate | None) -> str:
    if est is None:
        return "> 1 for some lines"
    return f"{10 ** est.value:.2g}" + (f" [{10 ** est.ci[0]:.2g}, {10 ** est.ci[1]:.2g}]" if est.ci else "")


def shattering_figure(distances: np.ndarray, data: dict[tuple[str, str], np.ndarray], dataset: str):
    """Mean cosine of the input gradient against the distance along the line (log), one colour per network,
    initialization dashed, trained solid, the 95% interval over the images as a band."""
    plt = _pyplot()
    models = list(dict.fromkeys(m for m, _ in data))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, model in enumerate(models):
        for state, ls in (("init", "--"), ("trained", "-")):
            cos = data.get((model, state))
            if cos is None:
                continue
            mean, se = np.nanmean(cos, axis=0), np.nanstd(cos, axis=0, ddof=1) / np.sqrt(len(cos)) if len(cos) > 1 \
                else np.zeros(cos.shape[1])
            ax.plot(distances, mean, ls=ls, color=f"C{i}", lw=1.8, label=f"{model}, {state} ({len(cos)} lines)")
            ax.fill_between(distances, mean - 1.96 * se, mean + 1.96 * se, color=f"C{i}", alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.axhline(0.5, color="gray", lw=0.6, ls=":")
    ax.set_xlabel("distance along the line (fraction of the image's norm)")
    ax.set_ylabel("cosine of the input gradient with that at the image")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, fontsize=7)
    ax.set_title(f"{dataset}: shattered gradients (Balduzzi et al. 2017), initialization dashed, trained solid",
                 fontsize=9)
    fig.tight_layout()
    return fig


def shattering_training_figure(distances: np.ndarray, data: dict[tuple[str, str], np.ndarray], dataset: str,
                               epochs: int):
    """The distance where the cosine falls to 0.5 against the epoch (initialization at 0, trained at ``epochs``), for
    the networks measured at a kept epoch (the others would show a line where nothing was measured), one colour per
    depth, plain dashed and residual solid, the 95% interval over the lines as bars (their number: the table's); a
    network's line across epochs that another was measured at and it was not is faint and dotted."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    during = {m for m, state in data if state.startswith("epoch")}
    rows = [r for r in shattering_rows(distances, data) if r["half"] is not None and r["network"] in during]
    depths = sorted({p[1] for r in rows if (p := _depth_of(r["network"]))})
    ticks = sorted({_when(r["state"], epochs) for r in rows})
    for model in dict.fromkeys(r["network"] for r in rows):
        mine = sorted((r for r in rows if r["network"] == model), key=lambda r: _when(r["state"], epochs))
        parsed = _depth_of(model)
        x = np.array([_when(r["state"], epochs) for r in mine])
        y = np.array([10 ** r["half"].value for r in mine])
        ci = np.array([[10 ** c for c in r["half"].ci] if r["half"].ci else (v, v) for r, v in zip(mine, y)])
        colour = f"C{depths.index(parsed[1])}" if parsed else "k"
        ls = "--" if parsed and parsed[0] == "plain" else "-"
        # labels beginning with "_" stay out of the legend, whose entry for the network is the last line
        ax.errorbar(x, y, yerr=np.abs(ci.T - y), color=colour, ls="none", marker="o", ms=3.5, capsize=2,
                    label=f"_{model}")
        for i in range(len(x) - 1):  # a span over epochs another network was measured at, and this one not: faint
            skipped = any(x[i] < t < x[i + 1] for t in ticks)
            ax.plot(x[i:i + 2], y[i:i + 2], color=colour, ls=":" if skipped else ls, lw=0.9 if skipped else 1.5,
                    alpha=0.5 if skipped else 1.0, label=f"_{model} span")
        ax.plot([], [], color=colour, ls=ls, marker="o", ms=3.5, lw=1.5, label=model)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel(f"epoch (0: initialization, {epochs}: trained)")
    ax.set_ylabel("distance where the cosine falls to 0.5")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, fontsize=7)
    ax.set_title(f"{dataset}: shattered gradients during training, networks with kept epochs (plain dashed, residual "
                 "solid;\nfaint dotted: across epochs it was not measured at)", fontsize=9)
    fig.tight_layout()
    return fig


def shattering_lines(distances: np.ndarray, data: dict[tuple[str, str], np.ndarray]) -> list[str]:
    rows = shattering_rows(distances, data)
    head = " | ".join(f"cosine at distance {d:g}" for d in SHATTERING_AT)
    table = [f"| network | state | lines (images x seeds) | {head} | distance where the cosine falls to 0.5 |",
             "|" + "---|" * (4 + len(SHATTERING_AT))]
    table += [f"| {r['network']} | {r['state']} | {r['images']} | " + " | ".join(_cos_cell(r["at"][d])
              for d in SHATTERING_AT) + f" | {_half_cell(r['half'])} |" for r in rows]
    return ["### Shattered gradients", "",
            "Is a plain network's gradient hard to follow because it is noise? Balduzzi et al. (ICML 2017) found "
            "that the gradient of a deep plain network with respect to its input decorrelates like white noise "
            "between nearby inputs, and a ResNet's far less. Measured here (`python -m experiments.shattering`): "
            "along a random line through each of the first test images, the cosine of the loss's input gradient at "
            "the image with that at a distance d (a fraction of the image's norm), at the run's initialization "
            "(batch-norm statistics estimated over training batches), after the epochs whose checkpoints it kept "
            "(where it did) and after its last epoch, in inference mode. "
            "Mean over the lines with its 95% interval over them; the distance where the cosine falls to 0.5 is a "
            "geometric mean, interpolated in log distance.", "", "\n".join(table), "", *_twin_sentence(rows)]


def _twin_sentence(rows: list[dict[str, Any]]) -> list[str]:
    """For each plain network with its residual twin measured: how many times farther the twin's cosine holds
    above 0.5, at initialization and trained."""
    half = {(r["network"], r["state"]): r["half"] for r in rows if r["half"] is not None}
    said = []
    for (net, state), est in half.items():
        parsed = _depth_of(net)
        twin = f"resnet{parsed[1]}" if parsed and parsed[0] == "plain" else None
        if twin and (twin, state) in half:
            said.append(f"{net} {'at initialization' if state == 'init' else state}: "
                        f"{10 ** (half[(twin, state)].value - est.value):.3g}x")
    return [("How many times farther the residual twin's gradient keeps a cosine above 0.5 than the plain "
             "network's: " + "; ".join(said) + "."), ""] if said else []


# ------------------------------------------------------------------ the section
HE2015_STEPS, HE2015_BOUNDARIES = 64000, (32000, 48000)  # their schedule: lr 0.1, /10 at 32k and 48k, end at 64k


def protocol_line(run: dict[str, Any]) -> str:
    """How these runs' schedule deviates from He et al.'s, in words, from a run's config and history."""
    cfg, steps = run["config"], _iterations(run)[-1]
    sched, lr = cfg.get("schedule", {}), cfg.get("optimizer", {}).get("lr")
    if sched.get("name") == "piecewise" and tuple(sched.get("boundaries", ())) == HE2015_BOUNDARIES \
            and steps >= HE2015_STEPS - 100:
        return f"Schedule: He et al.'s own (lr {lr}, /10 at 32k and 48k steps), {steps:,} steps."
    warm = sched.get("warmup_steps") or 0
    how = {"cosine": "cosine decay to " + (f"{sched.get('final_fraction')} of the peak" if sched.get("final_fraction")
                                            else "zero"),
           "piecewise": f"x{sched.get('factor')} at steps {', '.join(map(str, sched.get('boundaries', ())))}",
           "constant": "constant"}.get(sched.get("name"), str(sched.get("name")))
    why = (" At a fraction of their budget a decay to zero, not their steps tuned for 64k, is what the budgeted-"
           "training literature recommends (Li, Yumer and Ramanan, ICLR 2020)." if sched.get("name") == "cosine" else "")
    return (f"Schedule, a deviation from He et al.'s (lr 0.1, /10 at 32k and 48k, 64k steps): {steps:,} steps "
            f"({steps / HE2015_STEPS:.0%} of theirs), lr {lr}" + (f" after a linear warm-up over {warm} steps" if warm
                                                                  else "") + f", {how}.{why}")


def _claims_markdown(rows: list[dict[str, Any]]) -> str:
    def num(v, digits=2, sign=""):
        return "" if v is None else f"{v:{sign}.{digits}f}"

    lines = ["| claim | dataset | a | b | statistic | ours a | ours b | He et al. a | He et al. b | a − b | 95% CI "
             "| seeds a/b | verdict | why |", "|" + "---|" * 14]
    for r in rows:
        d = 3 if r["claim"].startswith("G") else 2
        seeds = f"{r['n_a']}" if r["n_b"] is None else f"{r['n_a']}/{r['n_b']}"
        lines.append(f"| {r['claim']} | {r['dataset']} | {r['a']} | {r['b']} | {r['statistic']} | {num(r['ours_a'], d)} "
                     f"| {num(r['ours_b'], d)} | {num(r['published_a'])} | {num(r['published_b'])} | "
                     f"{num(r['estimate'], d, '+')} | {r['interval']} | {seeds} | **{r['verdict']}** | "
                     f"{r['why']} |")
    return "\n".join(lines) + "\n"


def _gradient_markdown(rows: list[dict[str, Any]]) -> str:
    cols = [k for k in rows[0] if k.startswith(("step", "epoch", "relative"))]
    title = {"step 0": "gradient norm at initialization (step 0)",
             **{c: f"gradient norm, {c}" for c in cols if c.startswith("epoch")},
             **{c: f"gradient / parameter norm, {c.split(', ')[1]}" for c in cols if c.startswith("relative")}}
    lines = ["| network | layer | seeds | " + " | ".join(title[c] for c in cols)
             + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows:
        lines.append(f"| {r['network']} | {r['layer']} | {r['seeds']} | " + " | ".join(_norm_cell(r[c]) for c in cols)
                     + " |")
    return "\n".join(lines) + "\n"


def _said(ratios: dict[str, float]) -> str:
    return "; ".join(f"{net}: {ratio:.3g}x" for net, ratio in ratios.items())


def _gradient_lines(layers: dict[str, list[dict[str, Any]]], dataset: str, epochs: int) -> list[str]:
    said = _said({net: 10 ** statistics.fmean(_log_ratio(s) for s in runs) for net, runs in layers.items()})
    start = {net: 10 ** statistics.fmean(np.log10(s["grad"][0, 0] / s["grad"][0, -1]) for s in runs)
             for net, runs in layers.items() if _from_init(runs)}
    grew = {net: 10 ** statistics.fmean(np.log10(s["param"][_window(s, 1), 0][-1] / s["param"][0, 0])
                                         for s in layers[net]) for net in start}
    init = ("At initialization (step 0, before any update) the first convolution's gradient norm over the last's: "
            + _said(start) + "; above 1 the gradient grows "
            "toward the input. The first convolution's kernel norm at the end of the first epoch over its initial "
            "one: " + _said(grew) + ". ") if start else ""
    return [f"### Gradients within the layers ({dataset})", "",
            "The L2 norm of the gradient of the first, middle and last convolution (of He et al.'s deepest plain and "
            "residual pair in this study), recorded every `layer_norms_every` steps: geometric mean over an epoch's "
            "recorded steps, mean over seeds with its 95% interval in brackets. With batch norm after every "
            "convolution a kernel's gradient scales as 1 / its norm, so the gradient relative to the parameter norm "
            "is beside it: a gradient that is small only because its weights grew is not a vanishing one.", "",
            _gradient_markdown(gradient_rows(layers, epochs)), "",
            f"{init}Over the whole run, the last convolution's gradient norm over the first's (geometric mean over "
            f"the recorded steps and the seeds): {said}. Above 1 the gradient shrinks toward the input.", ""]


def _layers(groups: Groups, dataset: str, depth: int, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Each network's recorded layer series at ``depth``, by name (plain56, resnet56), where it has any."""
    return {f"{k}{depth}": ser for k in DEPTH_KINDS if (ser := [
        s for r in groups.get((dataset, k, depth), []) if (s := layer_series(r, folder)) is not None])}


def depth_section(results: list[dict[str, Any]], out_dir: Path) -> tuple[list[str], list[dict[str, Any]], list[Path]]:
    """The report's depth section, its claim rows (for claims.csv) and its figures, when the study holds He et
    al.'s networks at two or more depths."""
    groups = depth_groups(results)
    datasets = sorted({d for d, _, _ in groups if len({n for dd, _, n in groups if dd == d}) > 1})
    if not datasets:
        return [], [], []
    figures, rows, grad_lines = [], [], []
    for d in datasets:
        figures += [_save(depth_curves_figure(groups, d), out_dir / f"depth_curves_{d}.png"),
                    _save(depth_error_figure(groups, d), out_dir / f"depth_error_{d}.png")]
        rows += claims({k: v for k, v in groups.items() if k[0] == d})
        deepest = max((n for dd, k, n in groups if dd == d and n <= DEEP
                       and (d, "plain", n) in groups and (d, "resnet", n) in groups), default=None)
        layers = _layers(groups, d, deepest, out_dir) if deepest is not None else {}
        if len(layers) == 2:
            epochs = min(len(r["history"]) for k in DEPTH_KINDS for r in groups[(d, k, deepest)])
            figures.append(_save(depth_grads_figure(layers, d), out_dir / f"depth_grads_{d}.png"))
            grad_lines += _gradient_lines(layers, d, epochs)
        rows += gradient_claims(layers if deepest == DEEP else _layers(groups, d, DEEP, out_dir), d)
    lines = ["## Depth: He et al.'s degradation experiment", "",
             "Final training error (running mean over the last epoch, augmented batches) and test error per depth, "
             "mean ± std over seeds (their number in brackets). He et al. (2015) give their ResNets' test errors "
             "(Table 6, 64k iterations on all 50k training images); for their plain networks the values are read "
             "by eye off their Fig. 6, to about a point. Our CIFAR-10 copy is decoded from JPEG files (quality 75; "
             "see the datasets README), so our errors are expected above theirs even at their protocol; a shorter "
             "schedule than theirs moves them further.", "",
             protocol_line(next(iter(groups.values()))[0]), "", depth_markdown({k: v for k, v in groups.items() if k[0] in datasets}), ""]
    if rows:
        lines += ["### The depth claims", "",
                  "Each as a difference of errors (percentage points, or log10 for G) with Welch's 95% interval over "
                  "the seeds of each network; *holds* where the interval lies above 0, *contradicted* below, *not "
                  f"resolved* where it spans 0 or a network has fewer than {stats.MIN_SEEDS} seeds (one seed gives "
                  "values, never a verdict). Networks deeper than 56 layers get values in the table, no claims. "
                  "Definitions: `jaxres/report/depth.py`; also in `claims.csv`.", "",
                  *(f"- {k}: {v}" for k, v in CLAIMS.items()), "", _claims_markdown(rows)]
    shattering = read_shattering(out_dir, {r["run"] for r in results})
    if shattering is not None:
        grad_lines += shattering_lines(*shattering)
        figures.append(_save(shattering_figure(*shattering, datasets[0]), out_dir / f"shattering_{datasets[0]}.png"))
        if any(state.startswith("epoch") for _, state in shattering[1]):
            epochs = max(len(r["history"]) for r in results)
            figures.append(_save(shattering_training_figure(*shattering, datasets[0], epochs),
                                 out_dir / f"shattering_training_{datasets[0]}.png"))
    lines += grad_lines + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return lines, rows, figures
