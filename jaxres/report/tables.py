"""The report's tables: the summary (final accuracies per group, ours beside the seed study's; markdown and CSV)
and the differences between rows that differ in one key, with Welch's 95% interval.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from typing import Any

from jaxres import stats
from jaxres.catalog import DATASETS
from jaxres.config import flatten
from jaxres.report.runs import FIXED_COLUMNS, group_key, mean_std, value_text
from jaxres.results import model_facts
from jaxres.stopping import best_epoch


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of runs equal in everything but the seed: mean and std over its seeds of
    the final train and test accuracy (runs that diverged excluded and counted)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[group_key(flatten(r["config"]))].append(r)
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(json.loads(k).get(c)) for c in FIXED_COLUMNS) + (k,)):
        runs = groups[key]
        ok = [r for r in runs if not r.get("diverged")]
        tr = mean_std([r["final"]["train_accuracy"] for r in ok])
        te = mean_std([r["final"]["test_accuracy"] for r in ok])
        held = [r for r in ok if "validation_accuracy" in r["final"]]  # runs with a validation split
        va = mean_std([r["final"]["validation_accuracy"] for r in held])
        at_best = mean_std([b["test_accuracy"] for b in map(lambda r: best_epoch(r["history"]), held) if b])
        config = json.loads(key)
        dataset, model = config["data.name"], config["model.name"]
        pub = DATASETS[dataset].published.get(model, {}) if dataset in DATASETS else {}
        stopped = [r for r in ok if r.get("stopped_early")]
        rows.append({"config": config, "dataset": dataset, "model": model, "epochs": config["epochs"],
                     "epochs_trained": sorted({len(r.get("history") or ()) or config["epochs"] for r in ok}),
                     "stopped_early": len(stopped),
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


def epochs_text(row: dict[str, Any]) -> str:
    """A summary row's epochs: the count asked, or the counts trained where a run stopped early ("3 of 8, 1 of 3
    seeds stopped early")."""
    trained = row.get("epochs_trained") or [row["epochs"]]
    if not row.get("stopped_early"):
        return str(row["epochs"])
    span = str(trained[0]) if len(trained) == 1 else f"{trained[0]}-{trained[-1]}"
    n = row["seeds"] - row["diverged"]
    return f"{span} of {row['epochs']}, {row['stopped_early']} of {n} seed{'s' if n > 1 else ''} stopped early"


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
        cells = [r["dataset"], r["model"], *(value_text(r["config"].get(c)) for c in columns), str(r["seeds"]),
                 epochs_text(r), _fmt(r["train_acc_mean"], r["train_acc_std"], n),
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
    flat = [{**{f"config.{k}": value_text(v) for k, v in r["config"].items()},
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
            accs[group_key(flatten(r["config"]))].append(r["final"]["test_accuracy"])
    residual = {r["config"]["model"]["name"]: f["residual"] for r in results if (f := model_facts(r))}
    by_rest: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_rest[json.dumps({k: v for k, v in row["config"].items() if k != key}, sort_keys=True)].append(row)
    out = []
    for group in by_rest.values():
        for i, first in enumerate(group):
            for second in group[i + 1:]:
                a, b = _oriented(key, first, second, residual)
                xa, xb = accs[group_key(a["config"])], accs[group_key(b["config"])]
                if not xa or not xb:
                    continue
                est = stats.welch(xa, xb)
                ci = est.ci
                out.append({"dataset": a["dataset"], "key": key, "a": value_text(a["config"].get(key)),
                            "b": value_text(b["config"].get(key)), "model": a["model"], "config": a["config"],
                            "difference": est.value, "n_a": len(xa), "n_b": len(xb), "ci": ci, "df": est.df,
                            "excludes_zero": None if ci is None else (ci[0] > 0 or ci[1] < 0)})
    return out


def _oriented(key: str, first: dict[str, Any], second: dict[str, Any],
              residual: dict[str, bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows (a, b) of a difference a - b: between models, the residual network first, as the claims orient
    theirs (resnet - cnn), by the models' facts (``residual``: name -> has shortcuts); otherwise in the order of
    the summary."""
    if key == "model.name" and [residual.get(r["config"].get(key), False) for r in (first, second)] == [False, True]:
        return second, first
    return first, second


def model_differences(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``differences`` between rows that differ only in the model."""
    return differences(rows, results, "model.name")


def difference_lines(diffs: list[dict[str, Any]], columns: list[str]) -> list[str]:
    out = []
    for d in diffs:
        key = d.get("key", "model.name")
        where = ", ".join(f"{k}={value_text(d['config'][k])}" for k in columns if k not in ("data.name", "model.name", key))
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