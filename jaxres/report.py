"""Tables and figures made from ``results.json`` files alone, so any report can be rebuilt without training."""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

# The seed study's final accuracies (its table), shown beside ours.
PUBLISHED = {
    ("mnist", "seed_cnn"): {"train": 0.9977, "test": 0.9848},
    ("mnist", "seed_resnet"): {"train": 0.9994, "test": 0.9874},
    ("cifar10", "seed_cnn"): {"train": 0.9882, "test": 0.5569},
    ("cifar10", "seed_resnet"): {"train": 0.98926, "test": 0.6067},
}


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's results.json below ``out_dir``, in a stable order."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*/results.json"))]
    return [r for r in runs if r.get("final")]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, model): mean and std over seeds of final train/test accuracy."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[r["config"]["dataset"], r["config"]["model"]].append(r)
    rows = []
    for (dataset, model), runs in sorted(groups.items()):
        tr = _mean_std([r["final"]["train_accuracy"] for r in runs])
        te = _mean_std([r["final"]["test_accuracy"] for r in runs])
        pub = PUBLISHED.get((dataset, model), {})
        rows.append({"dataset": dataset, "model": model, "seeds": len(runs),
                     "train_acc_mean": tr[0], "train_acc_std": tr[1], "test_acc_mean": te[0], "test_acc_std": te[1],
                     "published_train": pub.get("train"), "published_test": pub.get("test"),
                     "epochs": runs[0]["config"]["epochs"], "train_examples": runs[0]["final"]["train_examples"],
                     "test_examples": runs[0]["final"]["test_examples"],
                     "wall_s_mean": statistics.fmean(r["wall_time_s"] for r in runs)})
    return rows


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The seed study's table layout: final train/test accuracy per dataset and model, ours beside the seed's."""
    lines = ["| dataset | model | seeds | epochs | train acc | test acc | seed study train | seed study test |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pub = lambda k: "" if r[k] is None else f"{r[k]:g}"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['seeds']} | {r['epochs']} | "
                     f"{_fmt(r['train_acc_mean'], r['train_acc_std'], r['seeds'])} | "
                     f"{_fmt(r['test_acc_mean'], r['test_acc_std'], r['seeds'])} | "
                     f"{pub('published_train')} | {pub('published_test')} |")
    return "\n".join(lines) + "\n"


def summary_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def significance_lines(results: list[dict[str, Any]]) -> list[str]:
    """With 3+ seeds: does the ResNet-minus-CNN test accuracy gap exceed the seed-to-seed spread?"""
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        by[r["config"]["dataset"], r["config"]["model"]].append(r["final"]["test_accuracy"])
    out = []
    for dataset in sorted({d for d, _ in by}):
        for other in ("seed_resnet", "seed_plain_twin"):
            a, b = by.get((dataset, other), []), by.get((dataset, "seed_cnn"), [])
            if len(a) < 3 or len(b) < 3:
                continue
            gap = statistics.fmean(a) - statistics.fmean(b)
            spread = max(statistics.stdev(a), statistics.stdev(b))
            verdict = "exceeds" if abs(gap) > 2 * spread else "does not exceed"
            out.append(f"- {dataset}: {other} − seed_cnn test accuracy = {gap:+.4f}; this {verdict} twice the "
                       f"larger seed-to-seed std ({spread:.4f}), n = {len(a)}/{len(b)} seeds.")
    return out


def plot_curves(results: list[dict[str, Any]], dataset: str, path: str | Path) -> Path:
    """Accuracy (left) and loss (right) per epoch, train and test, every run of ``dataset``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in results if r["config"]["dataset"] == dataset]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {}
    for r in runs:
        model, seed = r["config"]["model"], r["config"]["seed"]
        color = colors.setdefault(model, f"C{len(colors)}")
        epochs = [h["epoch"] for h in r["history"]]
        label = model if len([x for x in runs if x["config"]["model"] == model]) == 1 else f"{model} (seed {seed})"
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            ax.plot(epochs, [h[f"train_{key}"] for h in r["history"]], "-", color=color, label=f"{label} train")
            ax.plot(epochs, [h[f"test_{key}"] for h in r["history"]], "--", color=color, label=f"{label} test")
    for ax, key in ((ax_acc, "accuracy (fraction correct)"), (ax_loss, "cross-entropy loss (nats)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{dataset}: train (solid) and test (dashed) per epoch")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path) -> list[Path]:
    """summary.md, summary.csv, curves_<dataset>.png and report.md from the results files in ``out_dir``."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    if not results:
        raise FileNotFoundError(f"no finished runs (*/results.json) in {out_dir}")
    rows = summary_rows(results)
    written = [out_dir / "summary.md", out_dir / "summary.csv"]
    written[0].write_text(summary_markdown(rows))
    written[1].write_text(summary_csv(rows))
    datasets = sorted({r["config"]["dataset"] for r in results})
    for d in datasets:
        written.append(plot_curves(results, d, out_dir / f"curves_{d}.png"))
    env = results[0]["environment"]
    proto = results[0]["config"]
    lines = [f"# jaxres comparison: {', '.join(datasets)}", "",
             f"Protocol `{proto['protocol']}`: {proto['epochs_by_dataset']} epochs, batch {proto['batch_size']}, "
             f"Adam(lr {proto['lr']}, b1 0.9, b2 0.999), no normalization unless stated (norm={proto['norm']}), "
             f"augmentation {'on' if proto['augment'] else 'off'}. Train accuracy is the running mean over each "
             "epoch's steps (as Keras reports it); test accuracy is over every example of the test split used.", "",
             f"Environment: jax {env['jax']}, flax {env['flax']}, backend {env['backend']}, "
             f"{env['device_count']} device(s) ({env['device_kind']}).", "",
             "## Final accuracies", "", summary_markdown(rows)]
    sig = significance_lines(results)
    lines += ["## ResNet minus CNN against the seed-to-seed spread", ""] + (
        sig or ["Fewer than 3 seeds per model: no claim about the gap is made."]) + [""]
    lines += ["## Curves", ""] + [f"![{d}](curves_{d}.png)" for d in datasets] + [""]
    lines += ["## Runs", "", "| run | wall time (s) | test examples |", "| --- | ---: | ---: |"]
    lines += [f"| {r['config']['run']} | {r['wall_time_s']:.0f} | {r['final']['test_examples']} |" for r in results]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    written.append(out_dir / "report.md")
    return written
