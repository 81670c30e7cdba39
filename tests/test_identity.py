"""Run names and the keys that change no number: what decides whether a finished run is found again."""
import json
from pathlib import Path

import pytest

from jaxres import claims, config, catalog, report

PINNED = json.loads((Path(__file__).parent / "data" / "run_names.json").read_text())


def _names(study: str) -> list[str]:
    if study == "seed_cpu campaign":  # experiments.campaign's fixed settings
        s = config.get_study("seed_cpu").set("compute.precision", "float32").set("compute.conv", "onednn")
    elif study == "quick by conv":  # the quick study's Winograd check (docs/benchmarks.md)
        s = config.get_study("quick").sweep("compute.conv", ["onednn", "winograd"]).sweep("seed", [0, 1, 2])
    else:
        s = config.get_study(study)
    return [config.run_name(r) for r in s.runs()]


@pytest.mark.parametrize("study", sorted(PINNED))
def test_every_preset_keeps_the_run_names_its_finished_runs_have(study):
    """A renamed run folder trains again from scratch and leaves the committed results/ out of its study."""
    assert _names(study) == PINNED[study]


def test_an_optimizer_registered_first_renames_no_run(monkeypatch):
    """The names once hashed the first registered default of every optimizer setting: dict order."""
    first = {"lion": catalog.Optimizer("lion", "jaxres.optim:lion", {"b1": 0.5, "b2": 0.5, "weight_decay": 0.1,
                                                                    "momentum": 0.1, "eps": 1.0, "nesterov": True})}
    monkeypatch.setattr(catalog, "OPTIMIZERS", first | catalog.OPTIMIZERS)
    for study in ("seed", "depth_cpu", "norm_opt"):
        assert _names(study) == PINNED[study]


def test_keys_that_change_no_number_are_listed_once_for_identity_report_and_claims():
    for key in config.NOT_IDENTITY:
        assert key in report.GROUP_EXCLUDE and key in claims.EXCLUDE, key
    assert set(report.GROUP_EXCLUDE) == set(config.NOT_IDENTITY) | {"seed"}
    assert set(claims.EXCLUDE) == set(report.GROUP_EXCLUDE) | {"model.name"}


def _result(cfg: config.RunConfig, test_accuracy: float) -> dict:
    flat = config.to_dict(cfg)
    final = {"epoch": cfg.epochs, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.0,
             "test_accuracy": test_accuracy, "train_examples": 1000, "test_examples": 100, "seconds": 1.0}
    return {"run": config.run_name(cfg), "config": flat, "identity": config.identity(cfg), "history": [final],
            "final": final, "diverged": None, "environment": {}, "study": "custom", "schema": 2, "wall_time_s": 1.0}


def test_seeds_saved_at_other_intervals_pool_in_one_summary_row():
    """Three seeds of one setting, one of them run with another checkpoint_every_minutes: one row (it was two)."""
    base = config.RunConfig(epochs=1)
    runs = [_result(base.model_copy(update={"seed": s}), 0.5 + s / 100) for s in (0, 1)]
    other = base.model_copy(update={"seed": 2, "checkpoint_every_minutes": 1.0, "checkpoint_every_steps": 7})
    runs.append(_result(other, 0.52))
    rows = report.summary_rows(runs)
    assert len(rows) == 1 and rows[0]["seeds"] == 3
    assert report.varying_keys(runs) == []  # nor a column for them
