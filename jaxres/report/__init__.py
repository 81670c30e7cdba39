"""Tables and figures made from ``results.json`` files alone, so any report can be rebuilt without training.

Runs are grouped by every config key except the seed: runs that differ in anything else are
never pooled. The keys that differ between groups become columns of the summary; the keys that
are the same everywhere are listed once in the report. Runs that diverged are counted per row
and left out of the means (their last metrics are not a result).

The parts: ``runs`` (loading and grouping), ``tables``, ``figures``, ``depth`` (He et al.'s experiment); this module
puts them together into ``report.md`` (``write_report``). No JAX anywhere (tests/test_layout.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxres import claims, stats
from jaxres.catalog import data_label
from jaxres import results as results_mod
from jaxres.config import flatten
from jaxres.report.depth import depth_section
from jaxres.report.figures import (curves_figure, facets, facets_figure, layer_heatmap_figure, layer_lines_figure,
                                   plot_curves, plot_facets, plot_layer_heatmap, plot_layer_lines, plot_layer_norms)
from jaxres.report.runs import (FIXED_COLUMNS, GROUP_EXCLUDE, load_results, ran_on, unfinished_runs, value_text,
                                varying_keys)
from jaxres.report.tables import (difference_lines, differences, model_differences, summary_csv, summary_markdown,
                                  summary_rows)

__all__ = ["FIXED_COLUMNS", "GROUP_EXCLUDE", "curves_figure", "difference_lines", "differences", "facets",
           "facets_figure", "layer_heatmap_figure", "layer_lines_figure", "load_results", "model_differences",
           "plot_curves", "plot_facets", "plot_layer_heatmap", "plot_layer_lines", "plot_layer_norms", "summary_csv",
           "summary_markdown", "summary_rows", "unfinished_runs", "varying_keys", "write_report"]


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_report(out_dir: str | Path, results: list[dict[str, Any]] | None = None) -> list[Path]:
    """summary.md, summary.csv, curves_<dataset>.png and report.md from the results files in ``out_dir`` (``results``:
    those files as ``load_results`` read them, where the caller has)."""
    out_dir = Path(out_dir)
    results = load_results(out_dir) if results is None else results
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
    lines += _diverged_lines(results) + _stopped_early_lines(results) + _difference_sections(rows, results, columns)
    claim_lines, claim_rows = claims.section(results)
    depth_lines, depth_rows, depth_figures = depth_section(results, out_dir)
    if claim_rows or depth_rows:
        written.append(claims.write_csv(claim_rows + depth_rows, out_dir))
    written += depth_figures
    lines += claim_lines + depth_lines + _figure_lines(datasets, faceted, layer_figures)
    lines += ["## Runs", "", "| run | wall time (s) | test examples | ran on |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {r['run']} | {r['wall_time_s']:.0f} | {r['final']['test_examples']} | {ran_on(r)} |" for r in results]
    lines += _unfinished_lines(unfinished_runs(out_dir, results))
    written.append(_write(out_dir / "report.md", "\n".join(lines) + "\n"))
    return written


def _curve_figures(results: list[dict[str, Any]], datasets: list[str], out_dir: Path,
                   columns: list[str]) -> tuple[list[Path], list[Path]]:
    """curves_<dataset>.png for each dataset, and curves_by_setting_<dataset>.png where runs differ in more than
    the model (one panel per setting)."""
    curves, faceted = [], []
    for d in datasets:
        curves.append(plot_curves(results, d, out_dir / f"curves_{data_label(d)}.png", columns))
        _, facet_rows, facet_cols = facets([r for r in results if r["config"]["data"]["name"] == d], columns)
        if len(facet_rows) * len(facet_cols) > 1:
            faceted.append(plot_facets(results, d, out_dir / f"curves_by_setting_{data_label(d)}.png", columns))
    return curves, faceted


def _opening(results: list[dict[str, Any]], datasets: list[str], columns: list[str]) -> list[str]:
    """The report's title, the study presets, the settings every run shares and the environments."""
    shared = {k: v for k, v in flatten(results[0]["config"]).items() if k not in columns and k != "seed"}
    envs = {json.dumps({k: r["environment"].get(k) for k in ("jax", "flax", "backend", "device_count",
                                                               "device_kind", "conv_backend")}) for r in results}
    studies = sorted({(r.get("study") or "custom") + _source_text(r.get("study_source")) for r in results})
    return [f"# jaxres study: {', '.join(datasets)}", "",
            f"Study preset(s): {', '.join(studies)}. Train accuracy is the running mean over each epoch's steps "
            "(as Keras reports it); test accuracy is over every example of the test split used.", "",
            "Settings shared by every run: " + ", ".join(f"`{k}={value_text(v)}`" for k, v in shared.items()) + ".", "",
            "Environment: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in json.loads(e).items()) for e in sorted(envs)) + ".", ""]


def _source_text(source: dict[str, Any] | None) -> str:
    """Where a study file defined a run: " (study file PATH:ARG, sha256 0123456789ab)"; "" for a preset."""
    if not source:
        return ""
    arg = f":{source['arg']}" if source.get("arg") is not None else ""
    return f" (study file {source['file']}{arg}, sha256 {source['sha256'][:12]})"


def _unfinished_lines(unfinished: list[tuple[str, str]]) -> list[str]:
    if not unfinished:
        return []
    return ["", "## Runs not in this report", "",
            "Started in this folder but without finished results, so nothing above includes them; run the "
            "study's command again to finish them (each resumes from its last save), then rebuild this report.", ""
            ] + [f"- {run}: {why}" for run, why in unfinished]


def _stopped_early_lines(results: list[dict[str, Any]]) -> list[str]:
    stopped = [r for r in results if r.get("stopped_early") and not r.get("diverged")]
    if not stopped:
        return []
    return ["## Runs that stopped early", "",
            "Early stopping (`patience`) ended these runs before their last epoch; their final numbers are those "
            "of the epoch they stopped at.", ""] + [f"- {r['run']}: {results_mod.how_it_ended(r)}." for r in stopped] + [""]


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
        f"![{d}](curves_{data_label(d)}.png)" for d in datasets] + [""]
    if layer_figures:
        lines += ["## Per-layer gradients", "",
                  "L2 norm of each layer's gradient at the recorded steps (every `layer_norms_every` steps; the "
                  "series are in each run's `layer_norms.npz`, with parameter and update norms).", ""]
        lines += [f"![{p.stem}]({p.name})" for p in layer_figures if p.name.startswith("layer_grads_")]
        lines += [f"![{p.stem}]({p.name})" for p in layer_figures if p.name.startswith("layers_")] + [""]
    return lines