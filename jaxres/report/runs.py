"""The runs a report is made of: every finished run's ``results.json`` below a folder (``load_results``), the run
folders that have none yet (``unfinished_runs``), and how runs are grouped: by every config key except the seed and
the keys that change no number (``GROUP_EXCLUDE``); the keys that differ between groups become columns.
"""
from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

from jaxres.config import POOLED, flatten, with_defaults
from jaxres.results import read  # results.json's layout and its checks, defined once


GROUP_EXCLUDE = POOLED  # pooled over: the seed, and the keys that change no number (jaxres.config)
FIXED_COLUMNS = ("data.name", "model.name", "epochs")


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's results.json below ``out_dir``, in a stable order, its config with the keys it
    predates at their defaults (``jaxres.config.with_defaults``: a run saved before ``data.validation`` existed
    pools with one saved after); unreadable or damaged ones (``jaxres.results.read``: not strict JSON, another layout, a config this jaxres
    cannot run) are skipped
    with a one-line warning each."""
    runs = []
    for p in sorted(Path(out_dir).glob("*/results.json")):
        r, problem = read(p)
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
    # a campaign's results folder also carries its unfinished runs' newest saves in parked/<run>/
    folders = [p for d in (Path(out_dir), Path(out_dir) / "parked") if d.is_dir() for p in sorted(d.iterdir())]
    started = [p for p in folders if p.is_dir() and ((p / "config.json").exists() or _training_now(p))]
    for folder in started:
        if folder.name in done:
            continue
        epochs = [int(m.stem) for m in (folder / "manifests").glob("*.json") if m.stem.isdigit()]
        saved = f"saved up to epoch {max(epochs)}" if epochs else "no epoch saved yet"
        holder = _training_now(folder)
        why = ("results.json damaged" if (folder / "results.json").exists() else
               f"being trained now by {holder}" if holder else "not finished") + f" ({saved})"
        missing.append((folder.name, why))
    return missing


def ran_on(r: dict[str, Any]) -> str:
    """The machines a run's epochs ran on, in words with their epoch counts, in the order first used: "AMD EPYC
    (avx2, avx512f) 28 epochs; AMD EPYC (avx2) 2 epochs". Epochs saved before rows named their machine (older
    jaxres) are counted as unrecorded, with the machine the run ended on (its ``environment``)."""
    counts: dict[str, int] = {}
    for h in r.get("history") or []:
        counts[h.get("machine") or ""] = counts.get(h.get("machine") or "", 0) + 1
    env = r.get("environment") or {}
    host = env.get("cpu") or {}  # as jaxres.cpu.kind() words it (the report imports no kernel module)
    words = ", ".join(str(v) for v in (host.get("model", "unknown"), host.get("family")) if v)
    last = (f"{words} ({', '.join(host.get('isa') or []) or 'no AVX2'})"
            if env.get("backend") == "cpu" and host else env.get("device_kind"))
    said = []
    for m, n in counts.items():
        epochs = f"{n} epoch{'s' if n != 1 else ''}"
        said.append(f"{m} {epochs}" if m else f"{epochs} unrecorded" + (f" (the run ended on {last})" if last else ""))
    return "; ".join(said)


def group_key(flat: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in flat.items() if k not in GROUP_EXCLUDE}, sort_keys=True)


def varying_keys(results: list[dict[str, Any]]) -> list[str]:
    """Config keys (dotted) whose values differ between runs, seed excluded, in config order."""
    flats = [flatten(r["config"]) for r in results]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if k not in GROUP_EXCLUDE
            and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def value_text(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)

def _training_now(folder: Path) -> str | None:
    """Who holds the run's lock (``jaxres.checkpoint.RunLock``: a ``flock`` on RUN/.lock), or None where no
    process trains it now."""
    import fcntl
    import os

    try:
        fd = os.open(folder / ".lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
