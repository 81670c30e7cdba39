"""A user's own networks by import path (issue 48): a jaxres.catalog.Network declared beside the user's code, Linen or
NNX (through flax.nnx.bridge), its plain twin derived from jaxres's blocks, its facts in results.json so that the
report needs neither the user's code nor JAX."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import compare

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
NETS = ["user_networks:small", "user_networks:small_nnx", "user_networks:tiny", "user_networks:tiny_plain"]


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(DATA))


def _argv(raw_dir, out, models, *extra):
    return ["--study", "tiny", "--datasets", "mnist", "--models", ",".join(models), "--raw-dir", str(raw_dir),
            "--out", str(out), "--no-progress", "--devices", "1", "--train-subset", "64", "--test-subset", "64",
            "--batch-size", "32", *extra]


def test_linen_nnx_and_a_derived_twin_train_and_report_without_their_code(on_path, raw_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert compare.main(_argv(raw_dir, out, NETS, "--seeds", "0,1")) == 0
    runs = {r["config"]["model"]["name"]: r for r in (json.loads(p.read_text()) for p in out.glob("*/results.json"))}
    assert set(runs) == set(NETS)
    assert all(r["history"] and r["final"]["test_examples"] == 64 for r in runs.values())
    tiny, plain = runs["user_networks:tiny"], runs["user_networks:tiny_plain"]
    assert tiny["params"] == plain["params"]  # the derived twin: the same layers, the shortcuts off
    assert tiny["model_facts"] == {"name": "user_networks:tiny", "family": "tiny", "depth": 6, "residual": True,
                                   "twin": "user_networks:tiny_plain", "kind": "resnet"}
    assert runs["user_networks:small_nnx"]["model_facts"]["kind"] == "plain"
    with open(out / "claims.csv") as f:  # the twin comparison, as for jaxres's own seed_plain_twin
        pairs = {(r["a"], r["b"]) for r in csv.DictReader(f)}
    assert pairs == {("user_networks:tiny_plain", "user_networks:tiny")}
    # the report again, in a fresh interpreter without the user's code on the path: no JAX, no user module
    code = ("import sys; from experiments import compare; rc = compare.main(['--report-only', sys.argv[1]]); "
            "assert 'jax' not in sys.modules and 'user_networks' not in sys.modules; sys.exit(rc)")
    again = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "user_networks:tiny_plain" in (out / "report.md").read_text()


@pytest.mark.parametrize("name, said", [
    ("no_such_package:net", "cannot import no_such_package (ModuleNotFoundError"),
    ("user_networks:nothing", "user_networks has no 'nothing'"),
    ("user_networks:SmallCNN", "is a class, not a jaxres.catalog.Network: declare one beside it, e.g. net = "
                               "Network(builder=SmallCNN, residual=False), and name user_networks:net"),
    ("user_networks:clash", "calls itself 'resnet20', the name of a built-in preset"),
    ("not a path", "is not one of seed_cnn"),
])
def test_a_bad_network_name_is_one_line_before_training(name, said, on_path, raw_dir, tmp_path, capsys):
    assert compare.main(_argv(raw_dir, tmp_path / "out", [name], "--epochs", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
