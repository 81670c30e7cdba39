"""Study files (issue 48): --study path.py and path.py:ARG, whose get_study() returns a jaxres Study, as flax's
--config file.py and big_vision's --config file.py:arg; --set and --sweep apply on top; each run records the file."""
import hashlib
import json
import textwrap

import pytest

from experiments import compare
from jaxres import config

TINY = """
from jaxres import config

def get_study(arg=None):
    study = config.get_study("tiny").set("data.train_subset", 64).set("data.test_subset", 64).set("data.batch_size", 32)
    study = study.sweep("model.name", ["seed_cnn"])
    return study.sweep("data.name", [arg or "mnist"])
"""


def _file(tmp_path, text, name="my_study.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_study_file_and_its_argument_give_the_study_with_the_flags_on_top(tmp_path, capsys):
    path = _file(tmp_path, TINY)
    assert compare.main(["--study", str(path), "--dry-run"]) == 0
    assert "1 runs" in capsys.readouterr().out
    assert compare.main(["--study", f"{path}:cifar10", "--sweep", "seed=0,1", "--set", "optimizer.lr=0.01",
                         "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and out.count("cifar10_seed_cnn_seed") == 2
    study = config.study_from(f"{path}:cifar10")
    assert study.source == {"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "arg": "cifar10"}
    assert [r.data.name for r in study.runs()] == ["cifar10"]
    assert config.study_from("quick").source is None  # a preset has no file


def test_a_study_file_imports_its_neighbours(tmp_path, capsys):
    (tmp_path / "my_settings.py").write_text("LR = 0.05\n")
    path = _file(tmp_path, "from jaxres import config\nimport my_settings\n\ndef get_study():\n"
                           "    return config.get_study('tiny').set('optimizer.lr', my_settings.LR)\n")
    assert {r.optimizer.lr for r in config.study_from(str(path)).runs()} == {0.05}


@pytest.mark.parametrize("text, arg, said", [
    (None, "", "there is no file"),
    ("def get_study(:\n", "", "my_study.py:1: "),
    ("X = 1\n", "", "defines no get_study(); define get_study()"),
    ("def get_study():\n    return {'name': 'x'}\n", "", "get_study() returned dict, not a jaxres Study"),
    ("def get_study():\n    x = 1\n    return 1 / 0\n", "", "get_study() raised ZeroDivisionError: division by zero (line 3)"),
    ("import no_such_module_here\n", "", "running it raised ModuleNotFoundError: No module named 'no_such_module_here' (line 1)"),
    ("def get_study():\n    pass\n", ":x", "get_study() takes no argument, but"),
    ("def get_study(arg):\n    pass\n", "", "get_study(arg) needs an argument: --study"),
    ("from jaxres import config\ndef get_study():\n    return config.get_study('tiny').set('optimizer.lr', -1)\n", "",
     "optimizer.lr=-1.0 must be > 0"),
])
def test_a_bad_study_file_is_one_line_naming_it(text, arg, said, tmp_path, capsys):
    path = tmp_path / "my_study.py"
    if text is not None:
        path.write_text(text)
    assert compare.main(["--study", f"{path}{arg}", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and str(path) in err and len(err.splitlines()) == 1, err


def test_an_unknown_preset_names_the_presets_and_the_file_door(capsys):
    assert compare.main(["--study", "bogus", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown study 'bogus'; choose one of seed, " in err and "study file" in err and len(err.splitlines()) == 1


def test_each_run_of_a_study_file_records_the_file_and_the_report_says_it(tmp_path, raw_dir, capsys):
    path = _file(tmp_path, TINY)
    out = tmp_path / "out"
    assert compare.main(["--study", f"{path}:mnist", "--raw-dir", str(raw_dir), "--out", str(out), "--no-progress",
                         "--devices", "1"]) == 0
    (result,) = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["study_source"] == {"file": str(path.resolve()), "sha256": digest, "arg": "mnist"}
    assert f"(study file {path.resolve()}:mnist, sha256 {digest[:12]})" in (out / "report.md").read_text()
