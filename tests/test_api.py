"""The library entry point: jaxres.run trains one RunConfig without the command line, and importing jaxres
changes nothing process-wide until jaxres.setup() is called."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxres
from jaxres import config, cpu

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(name="seed_cnn", dataset="mnist"):
    runs = config.get_study("tiny").runs()
    return next(r for r in runs if r.model.name == name and r.data.name == dataset and r.seed == 0)


def test_a_run_trains_through_the_python_api_alone(tmp_path, raw_dir):
    cfg = tiny_run()
    lines = []
    res = jaxres.run(cfg, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=False, log=lines.append)
    assert lines[0].startswith(f"{config.run_name(cfg)}: mnist seed_cnn") and "precision float32" in lines[0]
    assert lines[0].endswith(", saves inside an epoch every 10 minutes")
    assert "libdnnl" not in lines[0] and "OpenMP" not in lines[0]  # the backend's details are in results.json
    assert len(res["history"]) == cfg.epochs and 0.0 <= res["final"]["test_accuracy"] <= 1.0
    assert res["config"] == config.to_dict(cfg) and res["environment"]["cpu_fast_path"]
    env = res["environment"]
    assert env["onednn"] is None or env["onednn_library"].endswith("libdnnl.so.3") and env["onednn"] in lines[0]
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["history"] == res["history"]
    assert any((tmp_path / "run" / "checkpoints").iterdir())
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    # the same call again: the finished results, not trained again
    again = jaxres.run(cfg, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=False, log=lines.append)
    assert again["history"] == on_disk["history"] and "finished earlier" in lines[-1]


def test_run_refuses_bad_arguments_in_one_line(tmp_path, raw_dir):
    with pytest.raises(config.ConfigError, match="keep must be at least 1, got 0"):
        jaxres.run(tiny_run(), tmp_path / "run", raw_dir=raw_dir, keep=0)
    with pytest.raises(config.ConfigError, match="devices must be between 1 and the"):
        jaxres.run(tiny_run(), tmp_path / "run", raw_dir=raw_dir, devices=99)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("call, message", [
    (lambda d: jaxres.run(None, d), "cfg must be a jaxres.config.RunConfig (or the dict config.to_dict makes of one), "
                                    "got NoneType"),
    (lambda d: jaxres.run("tiny", d), "cfg must be a jaxres.config.RunConfig"),
    (lambda d: jaxres.run({"epochs": 1, "colour": "red"}, d), "colour"),
    (lambda d: jaxres.run(tiny_run(), d, keep="2"), "keep must be a whole number, got '2'"),
    (lambda d: jaxres.run(tiny_run(), d, keep=True), "keep must be a whole number, got True"),
    (lambda d: jaxres.run(tiny_run(), d, devices=1.0), "devices must be a whole number, got 1.0"),
    (lambda d: jaxres.run(tiny_run(), None), "workdir must be a folder (a str or a path), got None"),
    (lambda d: jaxres.run(tiny_run(), ""), "workdir must be a folder (a str or a path), got ''"),
    (lambda d: jaxres.run(tiny_run(), d, raw_dir=3), "raw_dir must be a folder (a str or a path), got 3"),
    (lambda d: jaxres.run(tiny_run(), d, log="print"), "log must be a function taking one str"),
])
def test_the_python_api_refuses_bad_arguments_as_config_errors(tmp_path, call, message):
    """Issue 36, case 9: the Python API's bad arguments are the CLI's one-line ConfigError, not an AttributeError or
    a TypeError from deep inside, and nothing is written."""
    with pytest.raises(config.ConfigError) as info:
        call(tmp_path / "run")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_the_python_api_takes_a_config_as_the_dict_results_json_holds(tmp_path, raw_dir):
    cfg = tiny_run()
    res = jaxres.run(cfg, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=False, log=lambda _: None)
    again = jaxres.run(res["config"], tmp_path / "run", raw_dir=raw_dir, progress=False, log=lambda _: None)
    assert again == json.loads((tmp_path / "run" / "results.json").read_text())


IMPORT_ONLY = """
import os
before = os.environ.get("XLA_FLAGS", "")
import jaxres, jaxres.models, jaxres.train, jaxres.config, jaxres.runner
from jaxres import cpu, models
models.get_model("seed_cnn")
print(os.environ.get("XLA_FLAGS", "") == before)
print(cpu.fast_path_status()); print(cpu.memory_status())
done = jaxres.setup()
print(done["cpu_fast_path"]); print(done["cpu_keep_memory"]); print(cpu.FLAG in os.environ.get("XLA_FLAGS", ""))
print(jaxres.setup() == done)
"""


def test_importing_jaxres_changes_nothing_until_setup():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXRES_")}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(cpu.FLAG, "").strip()
    out = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    unchanged, fast, memory, fast_after, memory_after, flag_set, idempotent = out.stdout.split("\n")[:7]
    assert unchanged == "True" and fast == "not applied" and memory == "not applied"
    assert fast_after == "applied" and memory_after == "applied" and flag_set == "True"
    assert idempotent == "True"


def test_the_command_line_is_installed(tmp_path):
    """pip install puts jaxres-compare next to the interpreter; it runs from any folder."""
    exe = Path(sys.executable).parent / "jaxres-compare"
    out = subprocess.run([str(exe), "--study", "tiny", "--dry-run"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("study tiny: 6 runs")
    moved = subprocess.run([sys.executable, "-m", "experiments.compare", "--study", "tiny", "--dry-run"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert moved.returncode == 0 and moved.stdout == out.stdout, moved.stderr[-2000:]


def test_compute_settings_are_part_of_a_runs_identity(tmp_path, raw_dir, monkeypatch):
    """A setting that changes how the arithmetic is summed is a config key in the identity: resuming under
    another value is refused in one line naming it, also when the value comes from the environment."""
    from jaxres.errors import CheckpointError

    for var in config.COMPUTE_ENV.values():
        monkeypatch.delenv(var, raising=False)
    cfg, lines = tiny_run(), []
    jaxres.run(cfg, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=False, log=lines.append)
    longer = config.replace(cfg, "epochs", 2)
    with pytest.raises(CheckpointError, match=r"compute.overlap_grads: .?auto.? there, False asked"):
        jaxres.run(config.replace(longer, "compute.overlap_grads", False), tmp_path / "run", raw_dir=raw_dir,
                   devices=1, progress=False, log=lines.append)
    monkeypatch.setenv("JAXRES_CONV_FUSE_ADD", "off")  # an override, parsed like --set
    with pytest.raises(CheckpointError, match=r"compute.fuse_add: True there, False asked"):
        jaxres.run(longer, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=False, log=lines.append)
    res = jaxres.run(cfg, tmp_path / "other", raw_dir=raw_dir, devices=1, progress=False, log=lines.append)
    assert res["config"]["compute"]["fuse_add"] is False and "(compute fuse_add=false)" in lines[-1]
    assert config.run_name(config.with_env(cfg)) != config.run_name(cfg)  # the CLI's folder is another one
    monkeypatch.setenv("JAXRES_CONV_FUSE_ADD", "maybe")
    with pytest.raises(config.ConfigError, match=r"^\$JAXRES_CONV_FUSE_ADD: compute.fuse_add='maybe' must be true or false$"):
        config.from_env()
    kept = config.replace(cfg, "compute.keep_memory", False)  # speed only: not part of the identity
    assert config.identity(kept) == config.identity(cfg) and config.run_name(kept) == config.run_name(cfg)


PRINT_ONLY = """
import sys
from experiments import compare
try:
    rc = compare.main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print("rc", rc, "jax" in sys.modules, "flax" in sys.modules, "orbax.checkpoint" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("flag", ["--help", "--list-keys", "--dry-run"])
def test_printing_commands_start_no_jax(flag):
    out = subprocess.run([sys.executable, "-c", PRINT_ONLY, flag, "--study", "depth", "--set", "compute.conv=xla"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.stderr.splitlines()[-1] == "rc 0 False False False", out.stderr[-2000:]
    assert out.stdout.strip()


def test_the_progress_bar_shows_running_loss_accuracy_and_images_per_second(tmp_path, raw_dir, capsys, monkeypatch):
    """Issue 36: the bar shows the running loss and accuracy and images/s, as Keras fit and Lightning do, and the
    first epoch's line splits off its first step, compilation included."""
    from jaxres import train

    monkeypatch.setattr(train, "POSTFIX_EVERY_S", 0.0)  # every step (2 s by default: no wait on the host per step)
    cfg = tiny_run().model_copy(update={"epochs": 2})
    lines = []
    jaxres.run(cfg, tmp_path / "run", raw_dir=raw_dir, devices=1, progress=True, log=lines.append)
    captured = capsys.readouterr()
    bar = captured.err.replace("\r", "\n")
    epochs = [ln for ln in captured.out.splitlines() if ln.startswith("epoch ")]
    assert "s (first step " in epochs[0] and "compilation included" in epochs[0] and "first step" not in epochs[1]
    shown = [ln for ln in bar.splitlines() if "epoch 1/2" in ln and "img_s=" in ln]
    assert shown and all("loss=" in ln and "acc=" in ln for ln in shown)
    assert float(shown[-1].split("img_s=")[1].split("]")[0].split(",")[0]) > 0
