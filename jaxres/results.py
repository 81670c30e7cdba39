"""A run's result files. ``results.json``, a finished run's results: its name (``RESULTS``), layout version
(``SCHEMA``), the one shape check every reader uses (``results_problem``), and writing it (``write``: strict JSON,
atomic). ``layer_norms.npz`` (``LAYER_FILE``), the per-layer norms of the recorded steps, appended every epoch.

Without JAX: the report, the claims and ``--report-only`` read results through this module alone. What a run
writes into it is assembled by ``jaxres.runner``; the environment it records too (``runner.environment``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxres import catalog, config

RESULTS = "results.json"
SCHEMA = 2


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that ``path`` is always either the old file or the whole new one."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:  # a full disk: name the file being written, not the temporary, and leave nothing
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None


def write(path: Path, result: dict[str, Any]) -> None:
    """Write a run's results to ``path``, non-finite floats as null (``json_safe``), atomically."""
    write_json_atomic(path, json_safe(result))


def finished(path: Path, cfg_dict: dict) -> dict | None:
    """The results of this exact run if ``path`` holds them; a damaged file is named and ignored (the run is
    rebuilt from its checkpoints). Asking for fewer epochs than the folder's run has is one ConfigError line:
    its results would be overwritten by those of an earlier epoch."""
    if not path.exists():
        return None
    done, problem = read(path)
    if problem is not None:
        print(f"warning: {path} is damaged: {problem}; the run is rebuilt from its checkpoints", file=sys.stderr)
        return None
    changed = [k for k in config.differences(done["config"], cfg_dict) if k not in config.NOT_IDENTITY]
    if changed == ["epochs"] and done["config"]["epochs"] > cfg_dict["epochs"]:
        raise too_few_epochs(path.parent, len(done["history"]), cfg_dict["epochs"])
    return done if not changed else None


def too_few_epochs(workdir: Path, trained: int, asked: int):
    """The ConfigError of a run folder trained for more epochs than asked."""
    return config.ConfigError(f"{workdir} holds this run trained for {trained} epochs; epochs={asked} would replace "
                              f"its results with those of epoch {asked}: ask for {trained} or more (more trains on), "
                              "or use another folder")


def results_problem(r: Any) -> str | None:
    """What makes ``r`` (a results.json, parsed) unusable, in words; None where it is a finished run's results
    of this SCHEMA whose config is one this jaxres can run (a model or dataset it does not know, a value out of
    range: the file was edited or damaged, and pooling it would change a verdict)."""
    if not isinstance(r, dict):
        return "not a JSON object"
    if r.get("schema") != SCHEMA:
        return f"written by another version of jaxres (schema {r.get('schema')}, this one reads {SCHEMA})"
    kinds = {"config": dict, "history": list, "final": dict, "run": str}
    wrong = [k for k, t in kinds.items() if not isinstance(r.get(k), t)]
    if not wrong and not all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in r["history"]):
        wrong = ["history"]
    if not wrong and not r["history"]:
        return "its history is empty"
    if wrong:
        return f"{', '.join(wrong)} missing or of the wrong type"
    try:
        config.from_dict(r["config"])
    except config.ConfigError as e:
        return f"its config is not one this jaxres can run ({e})"
    return None


def how_it_ended(r: dict[str, Any]) -> str:
    """A finished run's end in words, its epochs trained first: "8 epochs, test accuracy 0.9874", "stopped early
    after epoch 3 of 8 (...)", "3 epochs, diverged at step 12 (epoch 1)"."""
    asked, trained = r["config"]["epochs"], len(r["history"])
    if r.get("diverged"):
        return f"{asked} epochs, diverged at step {r['diverged']['step']} (epoch {r['diverged']['epoch']})"
    acc = f"test accuracy {r['final']['test_accuracy']:.4f}"
    stop = r.get("stopped_early")
    if stop:
        return (f"stopped early after epoch {stop['epoch']} of {asked}: no better validation accuracy for "
                f"{stop['patience']} epochs after epoch {stop['best_epoch']}; {acc}")
    return f"{trained} epochs, {acc}"


def model_facts(r: dict[str, Any]) -> dict[str, Any] | None:
    """A run's model facts (kind, twin, family, depth): as its results.json recorded them (``model_facts``: a
    user's network is described there, so reports need neither its code nor JAX), else the catalog's for a preset
    (runs saved before facts were recorded); None for an unknown name."""
    if r.get("model_facts"):
        return r["model_facts"]
    name = r["config"]["model"]["name"]
    return catalog.model_facts(name) if name in catalog.PRESETS else None


class NotStrictJSON(ValueError):
    """A results.json with a bare NaN or Infinity: jaxres writes strict JSON (``write``), so it was edited or
    damaged; Python's json module would read it without a word."""


def _bare(name: str) -> float:
    raise NotStrictJSON(f"it holds a bare {name}, which jaxres never writes (strict JSON): edited or damaged")


def read(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """A results.json parsed strictly, and what makes it unusable in words (``results_problem``); one of the two
    is None. Every reader of results files reads them through this."""
    try:
        r = json.loads(Path(path).read_text(), parse_constant=_bare)
    except FileNotFoundError:
        return None, "gone"
    except NotStrictJSON as e:
        return None, str(e)
    except (OSError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    problem = results_problem(r)
    return (r, None) if problem is None else (None, problem)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON; the row says why)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


LAYER_FILE = "layer_norms.npz"  # beside results.json: per-layer norms of the recorded steps


def append_layer_norms(path: str | Path, names: tuple[str, ...], norms: Any) -> None:
    """Add one epoch's per-layer norms (``jaxres.train.LayerNorms``) to the run's file, atomically.
    Recorded steps from that step on are replaced: after a resume, an epoch recorded but not
    checkpointed before the interruption is trained, and recorded, again."""
    path = Path(path)
    names = list(names)
    if not norms.steps.size:  # an epoch shorter than the recording interval
        return
    old = load_layer_norms(path) if path.exists() else None
    if old is None and path.exists():  # damaged: kept aside (nothing is lost), the record starts again here
        aside = path.with_name(f"{path.stem}.damaged.{int(time.time())}{path.suffix}")
        os.replace(path, aside)
        warnings.warn(f"{path} is damaged (not a readable .npz); kept as {aside.name}, and the per-layer record "
                      f"starts again at step {int(norms.steps.min())}", stacklevel=2)
    series = norms._asdict()
    if old is not None and old[0] == names:
        keep = old[1]["steps"] < norms.steps.min()
        series = {k: np.concatenate([old[1][k][keep], v]) for k, v in series.items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, names=np.array(names), **series)
    os.replace(tmp, path)


def load_layer_norms(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """(layer names in network order, {"steps": (S,), "grad"/"param"/"update": (S, layers)}), or None
    where the file is missing or unreadable."""
    try:
        with np.load(path) as f:
            return [str(n) for n in f["names"]], {k: f[k] for k in f.files if k != "names"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
