"""Tables and figures made from ``results.json`` files alone, so any report can be rebuilt without training.

Runs are grouped by every config key except the seed: runs that differ in anything else are
never pooled. The keys that differ between groups become columns of the summary; the keys that
are the same everywhere are listed once in the report. Runs that diverged are counted per row
and left out of the means (their last metrics are not a result).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections import Counter, defaultdict

import numpy as np
from pathlib import Path
from typing import Any

from jaxres import claims, catalog, stats
from jaxres.config import POOLED, flatten, with_defaults
from jaxres.catalog import DATASETS
from jaxres.stopping import best_epoch
from jaxres.results import results_problem  # results.json's layout, defined once

GROUP_EXCLUDE = POOLED  # pooled over: the seed, and the keys that change no number (jaxres.config)
FIXED_COLUMNS = ("data.name", "model.name", "epochs")


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's results.json below ``out_dir``, in a stable order, its config with the keys it
    predates at their defaults (``jaxres.config.with_defaults``: a run saved before ``data.validation`` existed
    pools with one saved after); unreadable or damaged ones (``jaxres.results.results_problem``) are skipped
    with a one-line warning each."""
    runs = []
    for p in sorted(Path(out_dir).glob("*/results.json")):
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            problem = f"unreadable ({type(e).__name__})"
        else:
            problem = results_problem(r)
        if problem is not None:
            warnings.warn(f"skipping {p}: {problem}; rerun the study to rebuild it", stacklevel=2)
            continue
        runs.append({**r, "config": with_defaults(r["config"])})
    return runs


def unfinished_runs(out_dir: str | Path, results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(run, why) for every run folder below ``out_dir`` that was started (it has its ``config.json``) but is not
    among ``results`` (``load_results``): interrupted, still training elsewhere, or its results.json damaged."""
    done = {r["run"] for r in results}
    missing = []
    for folder in sorted(p.parent for p in Path(out_dir).glob("*/config.json")):
        if folder.name in done:
            continue
        epochs = [int(m.stem) for m in (folder / "manifests").glob("*.json") if m.stem.isdigit()]
        saved = f"saved up to epoch {max(epochs)}" if epochs else "no epoch saved yet"
        why = ("results.json damaged" if (folder / "results.json").exists() else "not finished") + f" ({saved})"
        missing.append((folder.name, why))
    return missing


def _key(flat: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in flat.items() if k not in GROUP_EXCLUDE}, sort_keys=True)


def varying_keys(results: list[dict[str, Any]]) -> list[str]:
    """Config keys (dotted) whose values differ between runs, seed excluded, in config order."""
    flats = [flatten(r["config"]) for r in results]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if k not in GROUP_EXCLUDE
            and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of runs equal in everything but the seed: mean and std over its seeds of
    the final train and test accuracy (runs that diverged excluded and counted)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[_key(flatten(r["config"]))].append(r)
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(json.loads(k).get(c)) for c in FIXED_COLUMNS) + (k,)):
        runs = groups[key]
        ok = [r for r in runs if not r.get("diverged")]
        tr = _mean_std([r["final"]["train_accuracy"] for r in ok])
        te = _mean_std([r["final"]["test_accuracy"] for r in ok])
        held = [r for r in ok if "validation_accuracy" in r["final"]]  # runs with a validation split
        va = _mean_std([r["final"]["validation_accuracy"] for r in held])
        at_best = _mean_std([b["test_accuracy"] for b in map(lambda r: best_epoch(r["history"]), held) if b])
        config = json.loads(key)
        dataset, model = config["data.name"], config["model.name"]
        pub = DATASETS[dataset].published.get(model, {}) if dataset in DATASETS else {}
        rows.append({"config": config, "dataset": dataset, "model": model, "epochs": config["epochs"],
                     "seeds": len(runs), "diverged": len(runs) - len(ok),
                     "train_acc_mean": tr[0], "train_acc_std": tr[1], "test_acc_mean": te[0], "test_acc_std": te[1],
                     "validation_acc_mean": va[0], "validation_acc_std": va[1],
                     "best_val_test_acc_mean": at_best[0], "best_val_test_acc_std": at_best[1],
                     "published_train": pub.get("train"), "published_test": pub.get("test"),
                     "train_examples": runs[0]["final"]["train_examples"],
                     "test_examples": max(r["final"]["test_examples"] for r in runs),
                     "wall_s_mean": statistics.fmean(r["wall_time_s"] for r in runs)})
    return rows


def _fmt(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "diverged"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def summary_markdown(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Final train/test accuracy per group, ours beside the seed study's; ``columns``: the config
    keys that differ between rows (besides dataset and model)."""
    columns = [c for c in (columns or []) if c not in FIXED_COLUMNS]
    diverged = any(r["diverged"] for r in rows)
    held = any(r.get("validation_acc_mean") is not None for r in rows)  # a validation split: its columns
    head = ["dataset", "model", *columns, "seeds", "epochs", "train acc", "test acc",
            *(["validation acc", "test acc at the best validation epoch"] if held else []), "seed study train",
            "seed study test"] + (["diverged"] if diverged else [])
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---" if i < 2 + len(columns) else "---:" for i in range(len(head))) + " |"]
    for r in rows:
        n = r["seeds"] - r["diverged"]
        pub = lambda k: "" if r[k] is None else f"{r[k]:g}"
        cells = [r["dataset"], r["model"], *(_value(r["config"].get(c)) for c in columns), str(r["seeds"]),
                 str(r["epochs"]), _fmt(r["train_acc_mean"], r["train_acc_std"], n),
                 _fmt(r["test_acc_mean"], r["test_acc_std"], n),
                 *([_fmt(r["validation_acc_mean"], r["validation_acc_std"], n) if r["validation_acc_mean"] is not None
                    else "", _fmt(r["best_val_test_acc_mean"], r["best_val_test_acc_std"], n)
                    if r["best_val_test_acc_mean"] is not None else ""] if held else []),
                 pub("published_train"), pub("published_test")]
        if diverged:
            cells.append(f"{r['diverged']}/{r['seeds']}" if r["diverged"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """Every config key and every summary value, one row per group."""
    flat = [{**{f"config.{k}": _value(v) for k, v in r["config"].items()},
             **{k: v for k, v in r.items() if k != "config"}} for r in rows]
    buf = io.StringIO()
    if flat:
        fields = list(dict.fromkeys(k for row in flat for k in row))
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(flat)
    return buf.getvalue()


def differences(rows: list[dict[str, Any]], results: list[dict[str, Any]], key: str = "model.name"
                ) -> list[dict[str, Any]]:
    """For each pair of rows that differ only in ``key`` (the model, the precision, ...): the difference of
    mean test accuracy (a - b) over the seeds of each row and its 95% interval by Welch's t
    (``jaxres.stats.welch``). Pairs with fewer than MIN_SEEDS finished seeds on either side get no
    interval (``ci`` None)."""
    accs: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if not r.get("diverged"):
            accs[_key(flatten(r["config"]))].append(r["final"]["test_accuracy"])
    by_rest: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_rest[json.dumps({k: v for k, v in row["config"].items() if k != key}, sort_keys=True)].append(row)
    out = []
    for group in by_rest.values():
        for i, first in enumerate(group):
            for second in group[i + 1:]:
                a, b = _oriented(key, first, second)
                xa, xb = accs[_key(a["config"])], accs[_key(b["config"])]
                if not xa or not xb:
                    continue
                est = stats.welch(xa, xb)
                ci = est.ci
                out.append({"dataset": a["dataset"], "key": key, "a": _value(a["config"].get(key)),
                            "b": _value(b["config"].get(key)), "model": a["model"], "config": a["config"],
                            "difference": est.value, "n_a": len(xa), "n_b": len(xb), "ci": ci, "df": est.df,
                            "excludes_zero": None if ci is None else (ci[0] > 0 or ci[1] < 0)})
    return out


def _oriented(key: str, first: dict[str, Any], second: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows (a, b) of a difference a - b: between models, the residual network first, as the claims orient
    theirs (resnet - cnn); otherwise in the order of the summary."""
    if key == "model.name":
        residual = [bool(getattr(catalog.PRESETS.get(r["config"].get(key)), "residual", False)) for r in (first, second)]
        if residual == [False, True]:
            return second, first
    return first, second


def model_differences(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``differences`` between rows that differ only in the model."""
    return differences(rows, results, "model.name")


def difference_lines(diffs: list[dict[str, Any]], columns: list[str]) -> list[str]:
    out = []
    for d in diffs:
        key = d.get("key", "model.name")
        where = ", ".join(f"{k}={_value(d['config'][k])}" for k in columns if k not in ("data.name", "model.name", key))
        what = "" if key == "model.name" else f" {d['model']}, {key}"
        head = (f"- {d['dataset']}{what}{f' ({where})' if where else ''}: {d['a']} − {d['b']} test accuracy = "
                f"{d['difference']:+.4f}")
        if d["ci"] is None:
            out.append(f"{head}, n = {d['n_a']}/{d['n_b']} seeds: too few seeds for an interval "
                       f"(need {stats.MIN_SEEDS}+ each).")
            continue
        lo, hi = d["ci"]
        differ = "the models differ" if key == "model.name" else "the settings differ"
        verdict = f"excludes 0: {differ}" if d["excludes_zero"] else "includes 0: no difference shown"
        df = f", df {d['df']:.1f}" if d["df"] is not None else ", no seed-to-seed spread"
        out.append(f"{head}, {stats.CONFIDENCE:.0%} CI [{lo:+.4f}, {hi:+.4f}] (Welch's t{df}, n = {d['n_a']}/{d['n_b']} "
                   f"seeds); the interval {verdict}.")
    return out


def _label(r: dict[str, Any], columns: list[str], several_seeds: bool) -> str:
    flat = flatten(r["config"])
    extra = [f"{c.split('.')[-1]}={_value(flat.get(c))}" for c in columns if c not in FIXED_COLUMNS]
    label = " ".join([flat["model.name"], *extra])
    return f"{label} (seed {flat['seed']})" if several_seeds else label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and free it."""
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _marks(n: int) -> dict[str, Any]:
    """Line keywords that keep a series of ``n`` points visible, one point included: a marker on at most about
    30 of them."""
    return {"marker": "o", "markersize": 3.5, "markevery": max(1, n // 30)}


def _legend(ax, **kwargs) -> None:
    """The axis's legend, where something on it has a label (else matplotlib draws an empty box and warns)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _whole_ticks(axis) -> None:
    """Ticks at whole numbers only (epochs, steps), one tick allowed (a single epoch or recorded step)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Whole epochs on the x axis, each drawn epoch half an epoch from the edge (one epoch: 0.5 to 1.5)."""
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    _whole_ticks(ax.xaxis)


def _mark_divergence(ax, r: dict[str, Any], key: str, color: str, label: str | None = None) -> None:
    """An x at the epoch where run ``r`` diverged: at the last finite value of ``key`` in its history, or,
    where none is finite, on the axis's bottom edge (a value of its own would be made up)."""
    epoch = r["diverged"]["epoch"]
    finite = [h[key] for h in r["history"] if _finite(h.get(key))]
    style = {"color": color, "markersize": 10, "mew": 2, "clip_on": False}
    if finite:
        ax.plot([epoch], [finite[-1]], "x", label=label, **style)
    else:
        ax.plot([epoch], [0.0], "x", transform=ax.get_xaxis_transform(), label=label and f"{label}, no finite "
                f"{key.split('_', 1)[1]}", **style)


def _series(history: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(h["epoch"], h[key]) for h in history if _finite(h.get(key))]


def curves_figure(results: list[dict[str, Any]], dataset: str, columns: list[str] | None = None):
    """The figure of ``plot_curves`` (a matplotlib Figure: axes 0 accuracy, 1 loss)."""
    plt = _pyplot()
    columns = columns or []
    runs = [r for r in results if r["config"]["data"]["name"] == dataset]
    several = len({r["config"]["seed"] for r in runs}) > 1
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors: dict[str, str] = {}
    seeds = Counter(_label(r, columns, False) for r in runs)
    listed: set[tuple[str, str, str]] = set()  # one legend entry per setting and split: its seeds share its colour
    for r in runs:
        label, setting = _label(r, columns, several), _label(r, columns, False)
        color = colors.setdefault(setting, f"C{len(colors) % 10}")
        name = f"{setting} ({seeds[setting]} seeds)" if seeds[setting] > 1 else setting
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            for split, style in (("train", "-"), ("validation", ":"), ("test", "--")):
                pts = _series(r["history"], f"{split}_{key}")
                if pts:
                    entry = f"{name} {split}" if (setting, split, key) not in listed else "_"  # "_": not listed
                    listed.add((setting, split, key))
                    ax.plot(*zip(*pts), style, color=color, label=entry, **_marks(len(pts)))
            if r.get("diverged"):
                _mark_divergence(ax, r, f"train_{key}", color, f"{label} diverged (epoch {r['diverged']['epoch']})")
    epochs = [h["epoch"] for r in runs for h in r["history"]] + [r["diverged"]["epoch"] for r in runs
                                                                 if r.get("diverged")]
    for ax, key in ((ax_acc, "accuracy (fraction correct)"), (ax_loss, "cross-entropy loss (nats)")):
        _epoch_axis(ax, epochs)
        if runs and not [line for line in ax.get_lines() if line.get_transform() == ax.transData]:
            ax.set_yticks([])  # only edge marks: a scale would suggest values
            ax.text(0.5, 0.5, "no finite value to draw", transform=ax.transAxes, ha="center", color="gray")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    marks = "; x: diverged" if any(r.get("diverged") for r in runs) else ""
    held = ", validation (dotted)" if any("validation_accuracy" in h for r in runs for h in r["history"]) else ""
    fig.suptitle(f"{dataset}: train (solid){held} and test (dashed) per epoch{marks}")
    fig.tight_layout()
    return fig


def plot_curves(results: list[dict[str, Any]], dataset: str, path: str | Path,
                columns: list[str] | None = None) -> Path:
    """Accuracy (left) and loss (right) per epoch, train and test, every run of ``dataset``, a marker on each
    epoch (one epoch is one point); a run that diverged ends in an x at the epoch where it did."""
    return _save(curves_figure(results, dataset, columns), path)


def facets(results: list[dict[str, Any]], columns: list[str]) -> tuple[list[str], list[tuple], list[tuple]]:
    """How ``plot_facets`` lays out runs that differ in more than the model: (keys, rows, columns). The
    first varying key besides the model picks the row, the others (a tied axis moves together) the
    column; rows and columns sorted by their values."""
    keys = [c for c in columns if c not in FIXED_COLUMNS]
    rows: list[tuple] = []
    cols: list[tuple] = []
    for r in results:
        values = _setting(r, keys)
        if values[:1] not in rows:
            rows.append(values[:1])
        if values[1:] not in cols:
            cols.append(values[1:])
    return keys, sorted(rows), sorted(cols)


def _setting(r: dict[str, Any], keys: list[str]) -> tuple[str, ...]:
    flat = flatten(r["config"])
    return tuple(_value(flat.get(k)) for k in keys)


def facets_figure(results: list[dict[str, Any]], dataset: str, columns: list[str]):
    """The figure of ``plot_facets``."""
    plt = _pyplot()
    runs = [r for r in results if r["config"]["data"]["name"] == dataset]
    keys, rows, cols = facets(runs, columns)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.6 * len(cols) + 1, 2.6 * len(rows) + 1),
                             sharex=True, sharey=True, squeeze=False)
    colors: dict[str, str] = {}
    for r in runs:
        values = _setting(r, keys)
        ax = axes[rows.index(values[:1])][cols.index(values[1:])]
        color = colors.setdefault(r["config"]["model"]["name"], f"C{len(colors) % 10}")
        for split, style in (("train", "-"), ("test", "--")):
            pts = _series(r["history"], f"{split}_accuracy")
            if pts:
                ax.plot(*zip(*pts), style, color=color, **_marks(len(pts)))
        if r.get("diverged"):
            _mark_divergence(ax, r, "train_accuracy", color)
    epochs = [h["epoch"] for r in runs for h in r["history"]]
    name = lambda k: k.split(".")[-1]
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = axes[i][j]
            ax.grid(alpha=0.3)
            _epoch_axis(ax, epochs)
            if i == 0:
                ax.set_title(" ".join(f"{name(k)}={v}" for k, v in zip(keys[1:], col)), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{name(keys[0])}={row[0]}\naccuracy" if keys else "accuracy")
            if i == len(rows) - 1:
                ax.set_xlabel("epoch")
    handles = [plt.Line2D([], [], color=c, label=m) for m, c in colors.items()]
    handles += [plt.Line2D([], [], color="gray", ls=ls, label=lab) for ls, lab in (("-", "train"), ("--", "test"))]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(f"{dataset}: accuracy per epoch, train (solid) and test (dashed), one panel per setting")
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    return fig


def plot_facets(results: list[dict[str, Any]], dataset: str, path: str | Path, columns: list[str]) -> Path:
    """Train (solid) and test (dashed) accuracy per epoch, one panel per setting besides the model (rows:
    the first varying key, columns: the others), one colour per model, every seed: for studies such as
    ``norm_opt`` whose runs would crowd one axis. A run that diverged ends in an x."""
    return _save(facets_figure(results, dataset, columns), path)


def _conv_layers(names: list[str]) -> list[int]:
    """Indices of the convolutions among a run's layers (not the normalizations, not the head)."""
    return [i for i, n in enumerate(names) if n != "head" and "norm" not in n.rsplit("/", 1)[-1]]


def _cell_edges(steps: np.ndarray) -> np.ndarray:
    """Edges of one cell per recorded step, each step inside its own cell: halfway to its neighbours (one step:
    half a step either side)."""
    steps = np.asarray(steps, np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[steps[0] - (mid[0] - steps[0])], mid, [steps[-1] + (steps[-1] - mid[-1])]])


def layer_heatmap_figure(names: list[str], series: dict[str, Any], title: str):
    """The figure of ``plot_layer_heatmap``."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    g = np.asarray(series["grad"], np.float64).T  # layers x steps
    positive = g[np.isfinite(g) & (g > 0)]
    fig, ax = plt.subplots(figsize=(10, 0.22 * len(names) + 1.6))
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    cells = np.ma.masked_invalid(np.where(g > 0, g, np.nan))
    mesh = ax.pcolormesh(_cell_edges(series["steps"]), np.arange(len(names) + 1) - 0.5, cells, norm=norm,
                         cmap="viridis", shading="flat")
    ax.set_ylim(len(names) - 0.5, -0.5)  # the network's first layer on top
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("step (one cell per recorded step)")
    _whole_ticks(ax.xaxis)
    fig.colorbar(mesh, ax=ax, label="L2 norm of the layer's gradient")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_layer_heatmap(names: list[str], series: dict[str, Any], title: str, path: str | Path) -> Path:
    """Gradient norm of every layer (rows, network order from the top) at every recorded step (one cell each,
    centred on its step), log colour."""
    return _save(layer_heatmap_figure(names, series, title), path)


def layer_lines_figure(runs: list[tuple[str, list[str], dict[str, Any]]], title: str):
    """The figure of ``plot_layer_lines``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), sharey=True, squeeze=False)
    for ax, (label, names, series) in zip(axes[0], runs):
        convs = _conv_layers(names)
        picks = dict.fromkeys([convs[0], convs[len(convs) // 2], convs[-1]]) if convs else {}
        for i, style in zip(picks, ("-", "--", ":")):
            ax.plot(series["steps"], series["grad"][:, i], style, label=names[i], **_marks(len(series["steps"])))
        ax.set_yscale("log")
        ax.set_xlabel("step")
        _whole_ticks(ax.xaxis)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        _legend(ax, fontsize=7)
    axes[0][0].set_ylabel("L2 norm of the layer's gradient")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_lines(runs: list[tuple[str, list[str], dict[str, Any]]], title: str, path: str | Path) -> Path:
    """First, middle and last convolution's gradient norm against the step, one panel per model side
    by side on a shared log axis (e.g. the plain twin beside the residual network), a marker on the recorded
    steps (one recorded step is one point)."""
    return _save(layer_lines_figure(runs, title), path)


def plot_layer_norms(results: list[dict[str, Any]], out_dir: Path, columns: list[str]) -> list[Path]:
    """``layers_<run>.png`` (heatmap) for every run with recorded layer norms, and per dataset
    ``layer_grads_<dataset>.png``: first / middle / last convolution of each model side by side
    (the first seed of each row)."""
    from jaxres.results import LAYER_FILE, load_layer_norms

    written, by_dataset = [], defaultdict(dict)
    for r in results:
        path = out_dir / r["run"] / LAYER_FILE
        loaded = load_layer_norms(path)
        if loaded is None and path.exists():
            warnings.warn(f"{path} is damaged (not a readable .npz); {r['run']} has no per-layer figures (its "
                          "other results are whole)", stacklevel=2)
        if loaded is None or not len(loaded[1]["steps"]):
            continue
        names, series = loaded
        written.append(plot_layer_heatmap(names, series, f"{r['run']}: per-layer gradient norm",
                                          out_dir / f"layers_{r['run']}.png"))
        label = _label(r, columns, False)
        by_dataset[r["config"]["data"]["name"]].setdefault(label, (label, names, series))
    for dataset, runs in sorted(by_dataset.items()):
        written.append(plot_layer_lines(list(runs.values()), f"{dataset}: gradient norm of the first, middle and "
                                        "last convolution", out_dir / f"layer_grads_{dataset}.png"))
    return written


# He et al. 2015, "Deep residual learning for image recognition", Table 6: CIFAR-10 test error (%) of their
# ResNets trained on the full 50k training images (for 110 layers: best of 5 runs; mean 6.61 +- 0.16).
HE2015_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
DEPTH_KINDS = ("plain", "resnet")


def _depth_of(model: str) -> tuple[str, int] | None:
    """("plain" | "resnet", depth) for He et al.'s CIFAR networks (their catalog facts), else None."""
    preset = catalog.PRESETS.get(model)
    return (preset.kind, preset.depth) if preset is not None and preset.family == "he" else None


def _iterations(r: dict[str, Any]) -> list[int]:
    """The training step reached at the end of each epoch of run ``r``."""
    batch = r["config"]["data"]["batch_size"]
    return list(np.cumsum([h["train_examples"] // batch for h in r["history"]]).tolist())


def depth_groups(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """He et al.'s networks grouped by (dataset, kind, depth); only where the runs differ in nothing else
    than the model and the seed (else a depth figure would mix settings)."""
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    rests = set()
    for r in results:
        kd = _depth_of(r["config"]["model"]["name"])
        if kd is not None:
            flat = flatten(r["config"])
            rests.add(json.dumps({k: v for k, v in flat.items() if k not in GROUP_EXCLUDE + ("model.name",)},
                                 sort_keys=True))
            groups[(r["config"]["data"]["name"], *kd)].append(r)
    return dict(groups) if len(rests) == 1 else {}


def depth_markdown(groups: dict[tuple[str, str, int], list[dict[str, Any]]]) -> str:
    """Final train and test error (%) per depth, plain beside residual, He et al.'s Table 6 beside ours."""
    def err(runs: list[dict] | None, split: str) -> str:
        ok = [r for r in runs or [] if not r.get("diverged")]
        if not runs:
            return ""
        if not ok:
            return "diverged"
        m, sd = _mean_std([100 * (1 - r["final"][f"{split}_accuracy"]) for r in ok])
        return f"{m:.2f} ± {sd:.2f}" if len(ok) > 1 else f"{m:.2f}"

    lines = ["| dataset | depth | plain train err % | plain test err % | resnet train err % | resnet test err % "
             "| He et al. resnet test err % |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for dataset, depth in sorted({(d, n) for d, _, n in groups}):
        cells = [err(groups.get((dataset, kind, depth)), split) for kind in DEPTH_KINDS for split in ("train", "test")]
        he = HE2015_TEST_ERROR.get(depth) if dataset == "cifar10" else None
        lines.append(f"| {dataset} | {depth} | " + " | ".join(cells) + f" | {'' if he is None else f'{he:.2f}'} |")
    return "\n".join(lines) + "\n"


def plot_depth_curves(groups: dict[tuple[str, str, int], list[dict[str, Any]]], dataset: str,
                      path: str | Path) -> Path:
    """He et al.'s Fig. 6: training error (thin) and test error (bold) against iterations, one line per depth
    (mean over seeds), plain networks left, residual right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({n for d, _, n in groups if d == dataset})
    colors = {n: f"C{i}" for i, n in enumerate(depths)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind in zip(axes, DEPTH_KINDS):
        seeds = max((len(v) for (d, k, _), v in groups.items() if d == dataset and k == kind), default=0)
        for n in depths:
            runs = [r for r in groups.get((dataset, kind, n), []) if not r.get("diverged")]
            if not runs:
                continue
            length = min(len(r["history"]) for r in runs)
            steps = _iterations(runs[0])[:length]
            for split, width in (("train", 0.8), ("test", 2.2)):
                err = [100 * (1 - statistics.fmean(r["history"][e][f"{split}_accuracy"] for r in runs))
                       for e in range(length)]
                ax.plot(steps, err, color=colors[n], lw=width, label=f"{kind}-{n}" if split == "test" else None,
                        **_marks(len(steps)))
        ax.set_title(f"{kind} networks" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""), fontsize=10)
        ax.set_xlabel("iteration (training step)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(f"{dataset}: training error (thin, running mean over each epoch) and test error (bold), "
                 "as He et al.'s Fig. 6", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_depth_error(groups: dict[tuple[str, str, int], list[dict[str, Any]]], dataset: str,
                     path: str | Path) -> Path:
    """Final test error against depth, plain and residual (mean and std over seeds), He et al.'s Table 6
    ResNet errors as open markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for kind, marker in zip(DEPTH_KINDS, ("s", "o")):
        pts = []
        for (d, k, n), runs in sorted(groups.items(), key=lambda kv: kv[0][2]):
            ok = [100 * (1 - r["final"]["test_accuracy"]) for r in runs if not r.get("diverged")]
            if d == dataset and k == kind and ok:
                pts.append((n, *_mean_std(ok)))
        if pts:
            x, m, sd = zip(*pts)
            ax.errorbar(x, m, yerr=sd, marker=marker, capsize=3, label=f"{kind} (ours)")
    if dataset == "cifar10":
        ax.plot(list(HE2015_TEST_ERROR), list(HE2015_TEST_ERROR.values()), "o--", mfc="none", color="gray",
                label="resnet, He et al. Table 6 (full protocol)")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final test error (%)")
    ax.set_title(f"{dataset}: test error against depth", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def depth_section(results: list[dict[str, Any]], out_dir: Path) -> tuple[list[str], list[Path]]:
    """The report's depth section (He et al.'s degradation experiment) and its figures, when the study
    holds He et al.'s networks at two or more depths."""
    groups = depth_groups(results)
    datasets = sorted({d for d, _, _ in groups if len({n for dd, _, n in groups if dd == d}) > 1})
    if not datasets:
        return [], []
    figures = []
    for d in datasets:
        figures += [plot_depth_curves(groups, d, out_dir / f"depth_curves_{d}.png"),
                    plot_depth_error(groups, d, out_dir / f"depth_error_{d}.png")]
    lines = ["## Depth: He et al.'s degradation experiment", "",
             "Final training error (running mean over the last epoch, augmented batches) and test error per depth, "
             "mean ± std over seeds where there are several. The last column is He et al. (2015) Table 6, their "
             "full protocol (64k iterations on all 50k training images). Our CIFAR-10 copy is decoded from JPEG "
             "files (quality 75; see the datasets README), so our errors are expected above theirs even at the "
             "full protocol; at a reduced protocol they are not comparable with it at all.", "",
             depth_markdown({k: v for k, v in groups.items() if k[0] in datasets}), ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return lines, figures


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_report(out_dir: str | Path) -> list[Path]:
    """summary.md, summary.csv, curves_<dataset>.png and report.md from the results files in ``out_dir``."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    if not results:
        raise FileNotFoundError(f"no finished runs (*/results.json) in {out_dir}")
    rows = summary_rows(results)
    columns = varying_keys(results)
    written = [_write(out_dir / "summary.md", summary_markdown(rows, columns)),
               _write(out_dir / "summary.csv", summary_csv(rows))]
    datasets = sorted({r["config"]["data"]["name"] for r in results})
    curves, faceted = _curve_figures(results, datasets, out_dir, columns)
    layer_figures = plot_layer_norms(results, out_dir, columns)
    written += curves + faceted + layer_figures
    lines = _opening(results, datasets, columns) + ["## Final accuracies", "", summary_markdown(rows, columns)]
    lines += _diverged_lines(results) + _difference_sections(rows, results, columns)
    claim_lines, claim_files = claims.section(results, out_dir)
    depth_lines, depth_figures = depth_section(results, out_dir)
    written += claim_files + depth_figures
    lines += claim_lines + depth_lines + _figure_lines(datasets, faceted, layer_figures)
    lines += ["## Runs", "", "| run | wall time (s) | test examples |", "| --- | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['wall_time_s']:.0f} | {r['final']['test_examples']} |" for r in results]
    lines += _unfinished_lines(unfinished_runs(out_dir, results))
    written.append(_write(out_dir / "report.md", "\n".join(lines) + "\n"))
    return written


def _curve_figures(results: list[dict[str, Any]], datasets: list[str], out_dir: Path,
                   columns: list[str]) -> tuple[list[Path], list[Path]]:
    """curves_<dataset>.png for each dataset, and curves_by_setting_<dataset>.png where runs differ in more than
    the model (one panel per setting)."""
    curves, faceted = [], []
    for d in datasets:
        curves.append(plot_curves(results, d, out_dir / f"curves_{d}.png", columns))
        _, facet_rows, facet_cols = facets([r for r in results if r["config"]["data"]["name"] == d], columns)
        if len(facet_rows) * len(facet_cols) > 1:
            faceted.append(plot_facets(results, d, out_dir / f"curves_by_setting_{d}.png", columns))
    return curves, faceted


def _opening(results: list[dict[str, Any]], datasets: list[str], columns: list[str]) -> list[str]:
    """The report's title, the study presets, the settings every run shares and the environments."""
    shared = {k: v for k, v in flatten(results[0]["config"]).items() if k not in columns and k != "seed"}
    envs = {json.dumps({k: r["environment"].get(k) for k in ("jax", "flax", "backend", "device_count",
                                                               "device_kind", "conv_backend")}) for r in results}
    studies = sorted({r.get("study") or "custom" for r in results})
    return [f"# jaxres study: {', '.join(datasets)}", "",
            f"Study preset(s): {', '.join(studies)}. Train accuracy is the running mean over each epoch's steps "
            "(as Keras reports it); test accuracy is over every example of the test split used.", "",
            "Settings shared by every run: " + ", ".join(f"`{k}={_value(v)}`" for k, v in shared.items()) + ".", "",
            "Environment: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in json.loads(e).items()) for e in sorted(envs)) + ".", ""]


def _unfinished_lines(unfinished: list[tuple[str, str]]) -> list[str]:
    if not unfinished:
        return []
    return ["", "## Runs not in this report", "",
            "Started in this folder but without finished results, so nothing above includes them; run the "
            "study's command again to finish them (each resumes from its last save), then rebuild this report.", ""
            ] + [f"- {run}: {why}" for run, why in unfinished]


def _diverged_lines(results: list[dict[str, Any]]) -> list[str]:
    diverged = [r for r in results if r.get("diverged")]
    if not diverged:
        return []
    return ["## Runs that diverged", ""] + [
        f"- {r['run']}: non-finite loss or gradient at step {r['diverged']['step']} (epoch "
        f"{r['diverged']['epoch']}); left out of the means." for r in diverged] + [""]


def _difference_sections(rows: list[dict[str, Any]], results: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Model against model, then every other key the study varies where rows differ in it alone (precision, ...)."""
    diffs = difference_lines(model_differences(rows, results), columns)
    lines = ["## Model against model", "",
             "Difference of mean test accuracy between rows that differ only in the model, with a "
             f"{stats.CONFIDENCE:.0%} confidence interval by Welch's t over the seeds (unequal variances). An "
             "interval that excludes 0 is the only claim made; with one seed no interval exists.", ""] + (
        diffs or ["No two rows differ only in the model."]) + [""]
    for key in columns:
        diffs = difference_lines(differences(rows, results, key), columns) if key not in FIXED_COLUMNS else []
        if diffs:
            lines += [f"## `{key}` against `{key}`", "",
                      f"Difference of mean test accuracy between rows that differ only in `{key}`, with the same "
                      "interval.", ""] + diffs + [""]
    return lines


def _figure_lines(datasets: list[str], faceted: list[Path], layer_figures: list[Path]) -> list[str]:
    lines = ["## Curves", ""] + [f"![{p.stem}]({p.name})" for p in faceted] + [
        f"![{d}](curves_{d}.png)" for d in datasets] + [""]
    if layer_figures:
        lines += ["## Per-layer gradients", "",
                  "L2 norm of each layer's gradient at the recorded steps (every `layer_norms_every` steps; the "
                  "series are in each run's `layer_norms.npz`, with parameter and update norms).", ""]
        lines += [f"![{p.stem}]({p.name})" for p in layer_figures if p.name.startswith("layer_grads_")]
        lines += [f"![{p.stem}]({p.name})" for p in layer_figures if p.name.startswith("layers_")] + [""]
    return lines
