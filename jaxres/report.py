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
from collections import defaultdict
from pathlib import Path
from typing import Any

from jaxres.config import flatten
from jaxres.data import DATASETS

SCHEMA = 2
GROUP_EXCLUDE = ("seed",)                     # pooled over: the seed only
FIXED_COLUMNS = ("data.name", "model.name", "epochs")


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's results.json below ``out_dir``, in a stable order; unreadable ones are
    skipped with a one-line warning each."""
    runs = []
    for p in sorted(Path(out_dir).glob("*/results.json")):
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping {p}: unreadable ({type(e).__name__}); rerun the study to rebuild it",
                          stacklevel=2)
            continue
        if r.get("schema") != SCHEMA:
            warnings.warn(f"skipping {p}: written by another version of jaxres (schema {r.get('schema')}, "
                          f"this one reads {SCHEMA})", stacklevel=2)
            continue
        if r.get("final"):
            runs.append(r)
    return runs


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
        config = json.loads(key)
        dataset, model = config["data.name"], config["model.name"]
        pub = DATASETS[dataset].published.get(model, {}) if dataset in DATASETS else {}
        rows.append({"config": config, "dataset": dataset, "model": model, "epochs": config["epochs"],
                     "seeds": len(runs), "diverged": len(runs) - len(ok),
                     "train_acc_mean": tr[0], "train_acc_std": tr[1], "test_acc_mean": te[0], "test_acc_std": te[1],
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
    head = ["dataset", "model", *columns, "seeds", "epochs", "train acc", "test acc", "seed study train",
            "seed study test"] + (["diverged"] if diverged else [])
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---" if i < 2 + len(columns) else "---:" for i in range(len(head))) + " |"]
    for r in rows:
        n = r["seeds"] - r["diverged"]
        pub = lambda k: "" if r[k] is None else f"{r[k]:g}"
        cells = [r["dataset"], r["model"], *(_value(r["config"].get(c)) for c in columns), str(r["seeds"]),
                 str(r["epochs"]), _fmt(r["train_acc_mean"], r["train_acc_std"], n),
                 _fmt(r["test_acc_mean"], r["test_acc_std"], n), pub("published_train"), pub("published_test")]
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


def significance_lines(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    """With 3+ seeds each: for rows that differ only in the model, does the test accuracy gap exceed
    twice the larger seed-to-seed std?"""
    accs: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if not r.get("diverged"):
            accs[_key(flatten(r["config"]))].append(r["final"]["test_accuracy"])
    by_rest: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_rest[json.dumps({k: v for k, v in row["config"].items() if k != "model.name"}, sort_keys=True)].append(row)
    out = []
    for group in by_rest.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                xa, xb = accs[json.dumps(a["config"], sort_keys=True)], accs[json.dumps(b["config"], sort_keys=True)]
                if len(xa) < 3 or len(xb) < 3:
                    continue
                gap = statistics.fmean(xa) - statistics.fmean(xb)
                spread = max(statistics.stdev(xa), statistics.stdev(xb))
                verdict = "exceeds" if abs(gap) > 2 * spread else "does not exceed"
                out.append(f"- {a['dataset']}: {a['model']} − {b['model']} test accuracy = {gap:+.4f}; this {verdict} "
                           f"twice the larger seed-to-seed std ({spread:.4f}), n = {len(xa)}/{len(xb)} seeds.")
    return out


def _label(r: dict[str, Any], columns: list[str], several_seeds: bool) -> str:
    flat = flatten(r["config"])
    extra = [f"{c.split('.')[-1]}={_value(flat.get(c))}" for c in columns if c not in FIXED_COLUMNS]
    label = " ".join([flat["model.name"], *extra])
    return f"{label} (seed {flat['seed']})" if several_seeds else label


def plot_curves(results: list[dict[str, Any]], dataset: str, path: str | Path,
                columns: list[str] | None = None) -> Path:
    """Accuracy (left) and loss (right) per epoch, train and test, every run of ``dataset``; a run that
    diverged ends in an x at the epoch where it did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = columns or []
    runs = [r for r in results if r["config"]["data"]["name"] == dataset]
    several = len({r["config"]["seed"] for r in runs}) > 1
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors: dict[str, str] = {}
    for r in runs:
        label = _label(r, columns, several)
        color = colors.setdefault(_label(r, columns, False), f"C{len(colors) % 10}")
        if r.get("diverged"):
            label += f" (diverged, epoch {r['diverged']['epoch']})"
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            for split, style in (("train", "-"), ("test", "--")):
                pts = [(h["epoch"], h[f"{split}_{key}"]) for h in r["history"]
                       if isinstance(h.get(f"{split}_{key}"), (int, float)) and math.isfinite(h[f"{split}_{key}"])]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=f"{label} {split}")
            if r.get("diverged"):
                finite = [h for h in r["history"] if isinstance(h.get(f"train_{key}"), (int, float))
                          and math.isfinite(h[f"train_{key}"])]
                y = finite[-1][f"train_{key}"] if finite else 0.0
                ax.plot([r["diverged"]["epoch"]], [y], "x", color=color, markersize=10, mew=2)
    for ax, key in ((ax_acc, "accuracy (fraction correct)"), (ax_loss, "cross-entropy loss (nats)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    marks = "; x: diverged" if any(r.get("diverged") for r in runs) else ""
    fig.suptitle(f"{dataset}: train (solid) and test (dashed) per epoch{marks}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    for d in datasets:
        written.append(plot_curves(results, d, out_dir / f"curves_{d}.png", columns))
    shared = {k: v for k, v in flatten(results[0]["config"]).items() if k not in columns and k != "seed"}
    envs = {json.dumps({k: r["environment"].get(k) for k in ("jax", "flax", "backend", "device_count",
                                                               "device_kind", "conv_backend")}) for r in results}
    studies = sorted({r.get("study") or "custom" for r in results})
    lines = [f"# jaxres study: {', '.join(datasets)}", "",
             f"Study preset(s): {', '.join(studies)}. Train accuracy is the running mean over each epoch's steps "
             "(as Keras reports it); test accuracy is over every example of the test split used.", "",
             "Settings shared by every run: " + ", ".join(f"`{k}={_value(v)}`" for k, v in shared.items()) + ".", "",
             "Environment: " + "; ".join(
                 ", ".join(f"{k} {v}" for k, v in json.loads(e).items()) for e in sorted(envs)) + ".", "",
             "## Final accuracies", "", summary_markdown(rows, columns)]
    diverged = [r for r in results if r.get("diverged")]
    if diverged:
        lines += ["## Runs that diverged", ""] + [
            f"- {r['run']}: non-finite loss or gradient at step {r['diverged']['step']} (epoch "
            f"{r['diverged']['epoch']}); left out of the means." for r in diverged] + [""]
    sig = significance_lines(rows, results)
    lines += ["## Model against model, against the seed-to-seed spread", ""] + (
        sig or ["Fewer than 3 seeds per model: no claim about the gap is made."]) + [""]
    lines += ["## Curves", ""] + [f"![{d}](curves_{d}.png)" for d in datasets] + [""]
    lines += ["## Runs", "", "| run | wall time (s) | test examples |", "| --- | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['wall_time_s']:.0f} | {r['final']['test_examples']} |" for r in results]
    written.append(_write(out_dir / "report.md", "\n".join(lines) + "\n"))
    return written
