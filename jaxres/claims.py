"""The seed study's claims, each as a verdict with a 95% interval, made from ``results.json`` histories alone.

The claims, as we read the seed's table and curves (``CLAIMS``), for each dataset whose runs hold both
models of a pair:

* C1: the ResNet's final test accuracy is higher than the other model's (ResNet - other > 0);
* C2: both fit the training set (each model's final train accuracy > ``FIT``, 0.98: the seed's lowest is 0.9882);
* C3: the ResNet converges in fewer epochs (other's convergence epoch - ResNet's > 0);
* C4: CIFAR-10 overfits heavily (each model's final train - test accuracy > ``GAP``, 0.2: the seed's gaps are
  0.43 and 0.38), for CIFAR-10 only, where the seed says it.

Pairs (``PAIRS``, read off the catalog by ``seed_pairs``): the seed's own, ``seed_cnn`` against ``seed_resnet`` (two different networks), and jaxres's,
``seed_plain_twin`` against ``seed_resnet`` (the same layers with and without shortcuts: only the shortcuts differ).

Convergence (C3, and the convergence table): a run's *convergence epoch* is the first epoch whose training
accuracy is within ``NEAR`` (0.5 points) of the best training accuracy that run reaches; it needs no
threshold that one dataset passes and another never does, and it is defined for every run. Beside it, per
model: the epochs to reach 0.95 and 0.99 training accuracy (blank where a run never does), the same
convergence rule on test accuracy, and the best-epoch test accuracy beside the final one. A run's length
bounds all of these: a 30-epoch run cannot show the seed's "about 80 epochs".

Verdicts: *holds* where the 95% interval (Welch's t for a difference, a one-sample t interval for one model's
mean; ``jaxres.stats``) lies wholly above the threshold, *contradicted* where it lies wholly below, *not
resolved* where it spans the threshold or where a model has fewer than two finished seeds (no interval). A claim
about each model (C2, C4) holds when it holds for both and is contradicted when it is contradicted for either.
Runs that diverged are left out. Runs are paired only where they differ in nothing but the model and the seed;
a study that varies more (precision, norm, ...) gets one set of rows per setting.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxres import stats
from jaxres.config import POOLED, flatten
from jaxres.catalog import DATASETS, PRESETS
from jaxres.results import model_facts
from jaxres.stopping import best_epoch


def seed_pairs() -> tuple[tuple[str, str], ...]:
    """The (other, ResNet) pairs the claims compare, from the catalog's facts: the seed study's own two networks
    (the presets its published tables name, the plain one against the residual one), then each such ResNet
    against its plain twin (``Preset.twin``: the same layers without the shortcuts)."""
    published = sorted({m for d in DATASETS.values() for m in d.published})
    resnets = [m for m in published if PRESETS[m].residual]
    pairs = [(m, r) for r in resnets for m in published if not PRESETS[m].residual]
    return tuple(pairs + [(PRESETS[r].twin, r) for r in resnets if PRESETS[r].twin])


PAIRS = seed_pairs()  # (("seed_cnn", "seed_resnet"), ("seed_plain_twin", "seed_resnet"))
FIT = 0.98                 # C2: final train accuracy above this
GAP = 0.2                  # C4: final train - test accuracy above this
NEAR = 0.005               # convergence: within half a point of the run's best
REACH = (0.95, 0.99)       # epochs to reach these training accuracies
OVERFIT_DATASETS = ("cifar10",)
EXCLUDE = (*POOLED, "model.name")  # pooled over (the seed, keys that change no number: jaxres.config), or paired on
CLAIMS = {
    "C1": "the ResNet's final test accuracy is higher",
    "C2": f"both fit the training set (final train accuracy > {FIT})",
    "C3": "the ResNet converges in fewer epochs",
    "C4": f"CIFAR-10 overfits heavily (final train - test accuracy > {GAP})",
}
VERDICTS = ("holds", "contradicted", "not resolved")


# ------------------------------------------------------------------ one run
def first_epoch(history: Sequence[dict[str, Any]], key: str, at_least: float) -> int | None:
    """The first epoch whose ``key`` is at least ``at_least`` (None where none is)."""
    return next((h["epoch"] for h in history if _finite(h.get(key)) and h[key] >= at_least), None)


def convergence(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What C3 and the convergence table read from one run's per-epoch history."""
    rows = [h for h in history if _finite(h.get("train_accuracy")) and _finite(h.get("test_accuracy"))]
    best_train = max(h["train_accuracy"] for h in rows)
    best = best_epoch(rows)  # chosen on the validation split where the run holds one out, else on the test split
    out = {"epochs": len(history), "final_train": rows[-1]["train_accuracy"], "final_test": rows[-1]["test_accuracy"],
           "best_test": best["test_accuracy"], "best_test_epoch": best["epoch"], "best_chosen_on": best["chosen_on"],
           "converged_epoch": first_epoch(rows, "train_accuracy", best_train - NEAR),
           "test_converged_epoch": first_epoch(rows, "test_accuracy", best["test_accuracy"] - NEAR)}
    out.update({f"epochs_to_{r}": first_epoch(rows, "train_accuracy", r) for r in REACH})
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v and abs(v) != float("inf")


# ------------------------------------------------------------------ groups of runs
def settings(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[dict]]]]:
    """setting (the config without model and seed, as JSON) -> model -> the convergence of each finished
    run that did not diverge."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.get("diverged") or not r.get("history"):
            continue
        flat = flatten(r["config"])
        setting = json.dumps({k: v for k, v in flat.items() if k not in EXCLUDE}, sort_keys=True)
        out[setting][flat["model.name"]].append({**convergence(r["history"]), "seed": flat["seed"]})
    return out


def missing_seeds(seeds: dict[str, list[int]]) -> str:
    """Where the models of a claim have not all finished the same seeds (a run left out as damaged, or not done
    yet), which seeds each lacks, as a clause for the claim's why; "" where none lacks any."""
    every = sorted({s for got in seeds.values() for s in got})
    lacking = {m: [s for s in every if s not in got] for m, got in seeds.items()}
    lacking = {m: miss for m, miss in lacking.items() if miss}
    if not lacking:
        return ""
    return ("; on fewer seeds than the study ran (" + ", ".join(map(str, every)) + "): " + "; ".join(
        f"{m} lacks seed{'s' if len(miss) > 1 else ''} {', '.join(map(str, miss))}" for m, miss in lacking.items()))


def verdict_of(est: stats.Estimate, threshold: float) -> tuple[str, str]:
    """(verdict, why) of a claim that the estimate is above ``threshold``: by where its interval lies."""
    if est.ci is None:
        return "not resolved", f"fewer than {stats.MIN_SEEDS} seeds: no interval"
    lo, hi = est.ci
    # No spread (every seed the same convergence epoch): the interval is the mean itself, which the why says.
    flat = " (no spread across seeds: the interval is the mean itself)" if est.df is None else ""
    if lo > threshold:
        return "holds", f"interval above {threshold:g}{flat}"
    if hi < threshold:
        return "contradicted", f"interval below {threshold:g}{flat}"
    return "not resolved", f"interval spans {threshold:g}{flat}"


def _both(verdicts: list[tuple[str, str]]) -> tuple[str, str]:
    words = [v for v, _ in verdicts]
    verdict = ("holds" if all(w == "holds" for w in words) else
               "contradicted" if "contradicted" in words else "not resolved")
    whys = [why for _, why in verdicts]
    return verdict, whys[0] if len(set(whys)) == 1 else "; ".join(f"{m}: {w}" for m, w in zip("ab", whys))


def _ci(est: stats.Estimate) -> str:
    return "" if est.ci is None else f"[{est.ci[0]:.4f}, {est.ci[1]:.4f}]"


def _difference(threshold: float, sign: int = 1) -> Callable[[list[float], list[float]], dict[str, Any]]:
    """The columns of a claim about a difference of means: b - a (``sign`` 1) or a - b (-1), Welch's interval."""
    def est_fn(xa, xb):
        est = stats.welch(xb, xa) if sign == 1 else stats.welch(xa, xb)
        verdict, why = verdict_of(est, threshold)
        return {"estimate": est.value, "ci": est.ci, "interval": _ci(est), "verdict": verdict, "why": why}
    return est_fn


def _each(threshold: float) -> Callable[[list[float], list[float]], dict[str, Any]]:
    """The columns of a claim that each model's mean passes ``threshold``: one interval per model."""
    def est_fn(xa, xb):
        ests = [stats.mean_interval(x) for x in (xa, xb)]
        verdict, why = _both([verdict_of(e, threshold) for e in ests])
        return {"estimate": None, "ci": None, "ci_a": ests[0].ci, "ci_b": ests[1].ci,
                "interval": f"{_ci(ests[0]) or '-'} / {_ci(ests[1]) or '-'}", "verdict": verdict, "why": why}
    return est_fn


def _seed_gap(p: dict[str, Any]) -> float | None:
    return p["train"] - p["test"] if "train" in p and "test" in p else None


def _claims_of(dataset: str, other: str, resnet: str) -> list[tuple]:
    """(claim, statistic, test, value of a run's convergence row, the seed's value, columns) for one pair."""
    rows = [
        ("C1", "final test accuracy", f"{resnet} - {other} > 0", lambda c: c["final_test"],
         lambda p: p.get("test"), _difference(0.0)),
        ("C2", "final train accuracy", f"each > {FIT}", lambda c: c["final_train"], lambda p: p.get("train"),
         _each(FIT)),
        ("C3", f"convergence epoch (train accuracy within {NEAR * 100:g} points of its best)", f"{other} - {resnet} > 0",
         lambda c: c["converged_epoch"], lambda p: p.get("converged_epoch"), _difference(0.0, sign=-1))]
    if dataset in OVERFIT_DATASETS:
        rows.append(("C4", "final train - test accuracy", f"each > {GAP}",
                     lambda c: c["final_train"] - c["final_test"], _seed_gap, _each(GAP)))
    return rows


def claims(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim, pair, dataset and setting where both models of the pair have finished runs."""
    rows = []
    facts = {r["config"]["model"]["name"]: f for r in results if (f := model_facts(r))}
    twins = tuple((f["twin"], m) for m, f in facts.items() if f["residual"] and f["twin"] and m not in PRESETS)
    for setting, by_model in settings(results).items():
        where = json.loads(setting)
        dataset = where["data.name"]
        published = DATASETS[dataset].published if dataset in DATASETS else {}
        for other, resnet in PAIRS + twins:  # the seed's pairs, and each user network against its declared twin
            if other not in by_model or resnet not in by_model:
                continue
            seed_a, seed_b = published.get(other, {}), published.get(resnet, {})
            lacking = missing_seeds({m: [c["seed"] for c in by_model[m]] for m in (other, resnet)})
            for claim, statistic, test, values, seed_value, est_fn in _claims_of(dataset, other, resnet):
                xa, xb = [values(c) for c in by_model[other]], [values(c) for c in by_model[resnet]]
                est = est_fn(xa, xb)
                rows.append({"claim": claim, "dataset": dataset, "setting": where, "a": other, "b": resnet,
                             "statistic": statistic, "test": test, "n_a": len(xa), "n_b": len(xb),
                             "ours_a": statistics.fmean(xa), "ours_b": statistics.fmean(xb),
                             "published_a": seed_value(seed_a), "published_b": seed_value(seed_b),
                             **est, "why": est["why"] + lacking})
    return rows


def convergence_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting and model, the means over seeds of what ``convergence`` reads (None where a run never
    reaches a training accuracy: the mean of the runs that do, and how many did, is in ``reached``)."""
    out = []
    for setting, by_model in settings(results).items():
        where = json.loads(setting)
        for model, runs in sorted(by_model.items()):
            row = {"dataset": where["data.name"], "model": model, "setting": where, "seeds": len(runs),
                   "epochs": max(c["epochs"] for c in runs),
                   "best_chosen_on": "/".join(sorted({c["best_chosen_on"] for c in runs}))}
            for k in ("final_test", "best_test", "best_test_epoch", "converged_epoch", "test_converged_epoch",
                      *(f"epochs_to_{r}" for r in REACH)):
                vals = [c[k] for c in runs if c[k] is not None]
                row[k] = statistics.fmean(vals) if vals else None
                row[f"{k}_reached"] = len(vals)
            out.append(row)
    return out


# ------------------------------------------------------------------ the report's section
def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    return f"{v:g}" if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1 else f"{v:.{digits}f}"


def _setting_label(setting: dict[str, Any], varying: list[str]) -> str:
    return ", ".join(f"{k}={setting.get(k)}" for k in varying)


def _varying(settings_: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for s in settings_ for k in s if k != "data.name"))
    return [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in settings_}) > 1]


def claims_markdown(rows: list[dict[str, Any]]) -> str:
    varying = _varying([r["setting"] for r in rows])
    head = ["claim", "dataset", *(["setting"] if varying else []), "pair (a vs b)", "statistic", "ours a", "ours b",
            "seed a", "seed b", "test", "estimate", "95% CI", "seeds a/b", "verdict", "why"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["claim"], r["dataset"], *([_setting_label(r["setting"], varying)] if varying else []),
                 f"{r['a']} vs {r['b']}", r["statistic"], _num(r["ours_a"]), _num(r["ours_b"]), _num(r["published_a"]),
                 _num(r["published_b"]), r["test"], "" if r["estimate"] is None else f"{r['estimate']:+.4f}",
                 r["interval"], f"{r['n_a']}/{r['n_b']}", f"**{r['verdict']}**", r["why"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def claims_csv(rows: list[dict[str, Any]]) -> str:
    """The claims rows as CSV; ``setting`` holds, as JSON, only the keys in which the rows' settings differ (``{}``
    for a study of one setting: the report lists the settings every run shares)."""
    varying = _varying([r["setting"] for r in rows])
    fields = ["claim", "dataset", "setting", "a", "b", "statistic", "ours_a", "ours_b", "published_a", "published_b", "test",
              "estimate", "ci_low", "ci_high", "ci_a", "ci_b", "n_a", "n_b", "verdict", "why"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        lo, hi = r["ci"] if r.get("ci") else (None, None)
        w.writerow({**r, "setting": json.dumps({k: r["setting"].get(k) for k in varying}, sort_keys=True), "ci_low": lo, "ci_high": hi,
                    "ci_a": json.dumps(r.get("ci_a")), "ci_b": json.dumps(r.get("ci_b"))})
    return buf.getvalue()


def convergence_markdown(rows: list[dict[str, Any]]) -> str:
    varying = _varying([r["setting"] for r in rows])
    on = "/".join(sorted({r["best_chosen_on"] for r in rows}))
    head = ["dataset", *(["setting"] if varying else []), "model", "seeds", "epochs", "final test",
            f"best-epoch test (chosen on {on})", "best epoch", f"converged (train within {NEAR * 100:g} pt of best)",
            f"test within {NEAR * 100:g} pt of best", *(f"epochs to {r} train" for r in REACH)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        def reach(k: str) -> str:
            got = r[f"{k}_reached"]
            if not got:
                return "not reached"
            return _num(r[k], 1) + ("" if got == r["seeds"] else f" ({got} of {r['seeds']} seeds reach it)")

        cells = [r["dataset"], *([_setting_label(r["setting"], varying)] if varying else []), r["model"],
                 str(r["seeds"]), str(r["epochs"]), _num(r["final_test"]), _num(r["best_test"]),
                 _num(r["best_test_epoch"], 1), _num(r["converged_epoch"], 1), _num(r["test_converged_epoch"], 1),
                 *(reach(f"epochs_to_{x}") for x in REACH)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """``claims.csv``: every claim row of a report (the seed's claims, the depth claims), written atomically."""
    path = Path(out_dir) / "claims.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(claims_csv(rows))
    tmp.replace(path)
    return path


def section(results: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The report's "Claims" section and its rows (for ``claims.csv``; none where no run pairs a ResNet with its
    comparison network), and the convergence table of every seed network."""
    rows = claims(results)
    conv = [r for r in convergence_rows(results) if r["model"] in {m for pair in PAIRS for m in pair}]
    lines = []
    if rows:
        lines += ["## The seed's claims", "",
                  "Each claim of the seed study, for its pair of networks (`seed_cnn` vs `seed_resnet`) and for "
                  "jaxres's own (`seed_plain_twin` vs `seed_resnet`: only the shortcuts differ), as a verdict. "
                  "*holds*: the 95% interval lies above the threshold; *contradicted*: below it; *not resolved*: "
                  "it spans it, or a model has fewer than 2 seeds. Estimates are differences of means (Welch's t "
                  "interval) or, for claims about each model, each model's mean (one-sample t interval, a / b). "
                  "Ours are means over seeds; the seed's values are from its table and, for convergence, read off "
                  "its curves. Definitions: `jaxres/claims.py`; also in `claims.csv`.", "",
                  *(f"- {k}: {v}" for k, v in CLAIMS.items()), "", claims_markdown(rows)]
    if conv:
        lines += ["### Convergence and best epochs", "",
                  f"Means over seeds. Converged: the first epoch whose training accuracy is within {NEAR * 100:g} "
                  "points of the run's best (bounded by the run's length). The best epoch is chosen on the "
                  "validation split where the runs hold one out (`data.validation`); chosen on the test set, its "
                  "test accuracy is an optimistic number, not a result.", "", convergence_markdown(conv)]
    return lines, rows
