"""The report's figures (matplotlib, Agg, PNG): accuracy and loss curves per dataset, one panel per setting where
runs differ in more than the model, and the per-layer gradient norms (a heatmap per run, the first, middle and
last convolution side by side). Each ``*_figure`` returns the figure, so tests read what is drawn.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jaxres.catalog import data_label
from jaxres.config import flatten
from jaxres.report.runs import FIXED_COLUMNS, value_text


def _label(r: dict[str, Any], columns: list[str], several_seeds: bool) -> str:
    flat = flatten(r["config"])
    extra = [f"{c.split('.')[-1]}={value_text(flat.get(c))}" for c in columns if c not in FIXED_COLUMNS]
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
    return tuple(value_text(flat.get(k)) for k in keys)


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


HEATMAP_CLIP_CELLS = 200  # from this many cells on, the heatmap's colours leave out the extreme 1% at each end


def layer_heatmap_figure(names: list[str], series: dict[str, Any], title: str):
    """The figure of ``plot_layer_heatmap``."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    g = np.asarray(series["grad"], np.float64).T  # layers x steps
    positive = g[np.isfinite(g) & (g > 0)]
    fig, ax = plt.subplots(figsize=(10, 0.22 * len(names) + 1.6))
    # a few steps (an explosion at initialization) would take the whole colour scale: with enough cells, the
    # colours span the 1st to 99th percentile and the bar's arrows stand for the values beyond
    lo, hi = (np.percentile(positive, [1, 99]) if positive.size >= HEATMAP_CLIP_CELLS
              else (positive.min(), positive.max()) if positive.size else (None, None))
    norm = LogNorm(vmin=lo, vmax=hi) if positive.size else None
    cells = np.ma.masked_invalid(np.where(g > 0, g, np.nan))
    mesh = ax.pcolormesh(_cell_edges(series["steps"]), np.arange(len(names) + 1) - 0.5, cells, norm=norm,
                         cmap="viridis", shading="flat")
    ax.set_ylim(len(names) - 0.5, -0.5)  # the network's first layer on top
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("step (one cell per recorded step)")
    _whole_ticks(ax.xaxis)
    below, above = (bool(positive.size and positive.min() < lo), bool(positive.size and positive.max() > hi))
    clipped = " (colours: 1st-99th percentile; arrows: beyond)" if below or above else ""
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")
    fig.colorbar(mesh, ax=ax, label="L2 norm of the layer's gradient" + clipped, extend=extend, extendfrac=0.02)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_layer_heatmap(names: list[str], series: dict[str, Any], title: str, path: str | Path) -> Path:
    """Gradient norm of every layer (rows, network order from the top) at every recorded step (one cell each,
    centred on its step), log colour; from ``HEATMAP_CLIP_CELLS`` cells on the colours span the 1st to 99th
    percentile (the colour bar's arrows: beyond), so that a few steps cannot wash out the rest."""
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
                                        "last convolution", out_dir / f"layer_grads_{data_label(dataset)}.png"))
    return written