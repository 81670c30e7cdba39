"""Several processes (jax.distributed over gloo on 127.0.0.1): the sharded jit step equals one process
and one device; a killed process, resume, bad setups; the supervisor's one-line errors."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxres import checkpoint, distributed

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(devices: int, **extra) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT),
                **extra)


# ------------------------------------------------------------------ setup, no JAX runtime needed
@pytest.mark.parametrize("kw, message", [
    (dict(coordinator="127.0.0.1:1234"), "--coordinator needs --num-processes N and --process-id I"),
    (dict(coordinator="localhost", num_processes=2, process_id=0), "--coordinator must be HOST:PORT"),
    (dict(coordinator="h:99999", num_processes=2, process_id=0), "--coordinator must be HOST:PORT"),
    (dict(coordinator="h:1234", num_processes=2, process_id=2), "--process-id must be between 0 and 1 for 2"),
    (dict(coordinator="h:1234", num_processes=0, process_id=0), "--num-processes must be at least 1"),
    (dict(num_processes=2, process_id=0), "--num-processes and --process-id need --coordinator"),
    (dict(auto=True, coordinator="h:1"), "--distributed auto finds the coordinator"),
    (dict(coordinator="h:1234", num_processes=2, process_id=0, init_timeout=0), "--init-timeout must be at least 1"),
])
def test_bad_setups_are_one_line(kw, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.setup_from(environ={}, **kw)


def test_setup_from_environment_and_flags_win():
    env = {"JAXRES_COORDINATOR": "10.0.0.1:8476", "JAXRES_NUM_PROCESSES": "4", "JAXRES_PROCESS_ID": "3"}
    s = distributed.setup_from(environ=env)
    assert (s.active, s.coordinator, s.num_processes, s.process_id) == (True, "10.0.0.1:8476", 4, 3)
    assert distributed.setup_from(process_id=1, environ=env).process_id == 1
    assert not distributed.setup_from(environ={}).active
    with pytest.raises(distributed.DistributedError, match="JAXRES_PROCESS_ID='x' must be an integer"):
        distributed.setup_from(environ=dict(env, JAXRES_PROCESS_ID="x"))


def test_runtime_log_lines_are_hidden_and_aborts_explained():
    setup = distributed.setup_from("127.0.0.1:1234", 2, 1, environ={})
    fatal = ("F1129 07:11:24.133042   12944 client.h:80] Terminating process because the JAX distributed service "
             "detected fatal errors. absl::Status: {}\n")
    message, status = distributed.explain(fatal.format("DEADLINE_EXCEEDED: Deadline Exceeded"), False, setup)
    assert status == 2 and "did not all join through 127.0.0.1:1234 within 300 s" in message
    message, status = distributed.explain(fatal.format("INVALID_ARGUMENT: Unexpected task registered"), False, setup)
    assert status == 2 and "process 1 is not one of the processes" in message
    message, status = distributed.explain(fatal.format("UNAVAILABLE: stopped sending heartbeats"), True, setup)
    assert status == distributed.LOST_PEER and "another process of this run stopped" in message
    block = ["E1129 07:53:47.977589 1 coordination_service.cc:1549] Use error polling: UNAVAILABLE: tasks unhealthy:\n",
             "1\n", "The tasks have crashed.\n", "compare: error: ours\n"]
    hidden, in_block = [], False
    for line in block + ["[Gloo] Rank 0 is connected to 3 peer ranks\n", "epoch 1/2: train loss 1\n"]:
        hide, in_block = distributed._is_runtime_noise(line, in_block)
        hidden.append(hide)
    assert hidden == [True, True, True, False, True, False]


# ------------------------------------------------------------------ the step on several processes
def run_steps(out: Path, devices: int, processes: int) -> list[subprocess.Popen]:
    port = free_port()
    extra = (lambda i: [f"127.0.0.1:{port}", str(processes), str(i)]) if processes > 1 else (lambda i: [])
    return [subprocess.Popen([sys.executable, "tests/multiprocess_steps.py", str(out), *extra(i)], cwd=ROOT,
                             env=env_with(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(processes)]


@pytest.mark.parametrize("other", ["four", pytest.param("one", marks=pytest.mark.slow)])
def test_two_processes_of_two_devices_equal_one_process_of_four_and_one_device(other, tmp_path):
    """3 Adam steps (lr 1e-3) on the same global batch of 16, seed_cnn and a ResNet with batch norm.
    Tolerance as tests/test_train.py's pmap test: reductions in another order, magnified by Adam's
    division for gradient entries near zero: no parameter apart by more than three steps, at most 0.1%
    by more than a tenth of a step (measured on an AVX-512 CPU: max 1.5e-5, mean 4e-9; on an AVX2 CPU one
    entry of 9,216 at 4.8e-4), the mean absolute difference below 1e-7 (with batch norm 1e-6: one device
    runs oneDNN's batch norm, several devices flax's; measured 5.7e-7 on the AVX2 CPU), batch statistics
    to 1e-4 (3.3e-5 measured there), losses to 1e-5 relative."""
    shape = {"two_by_two": (2, 2), "four": (4, 1), "one": (1, 1)}  # devices per process, processes
    procs = [(p, name) for name in ("two_by_two", other) for p in run_steps(tmp_path / f"{name}.npz", *shape[name])]
    for p, name in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, (name, out[-3000:])
    got = {n: np.load(tmp_path / f"{n}.npz") for n in ("two_by_two", other)}
    assert [(int(g["devices"]), int(g["processes"])) for g in got.values()] == [(4, 2), (4 if other == "four" else 1, 1)]
    ref = got["two_by_two"]
    g = got[other]
    for norm in ("none", "batch"):
        params = [k for k in ref.files if k.startswith(f"{norm}/params")]
        diffs = [np.abs(g[k] - ref[k]) for k in params]
        n = sum(d.size for d in diffs)
        assert max(float(d.max()) for d in diffs) < 3 * 1e-3, (other, norm)  # within 3 steps of lr 1e-3
        assert sum(int((d > 1e-4).sum()) for d in diffs) <= n // 1000, (other, norm)  # nearly all: a tenth
        # with batch norm, one device runs oneDNN's batch norm and several flax's (statistics over devices)
        assert sum(d.sum() for d in diffs) / n < (1e-7 if norm == "none" else 1e-6), (other, norm)
        for k in (k for k in ref.files if k.startswith(f"{norm}/batch_stats")):
            # statistics of activations made by those parameters: 1e-4 (per-device statistics, not averaged
            # over the devices, are apart by about 0.1)
            np.testing.assert_allclose(g[k], ref[k], atol=1e-4, err_msg=f"{other} {k}")
        np.testing.assert_allclose(g[f"{norm}/losses"], ref[f"{norm}/losses"], rtol=1e-5)
    assert any(k.startswith("batch/batch_stats") for k in ref.files)


# ------------------------------------------------------------------ a study on two processes
def compare_procs(raw_dir, out: Path, port: int, *extra, processes=2, ids=None, fault=None) -> list[subprocess.Popen]:
    """``processes`` processes of 2 devices training the tiny study (3 epochs of 4 steps); ``fault``: one of
    tests/fault_run.py's, injected into the child of every process (tests/fault_site)."""
    env = env_with(2)
    if fault is not None:
        env.update(JAXRES_TEST_FAULT=fault, PYTHONPATH=f"{ROOT / 'tests' / 'fault_site'}{os.pathsep}{ROOT}")
    args = ["--study", "tiny", "--datasets", "mnist", "--models", "seed_cnn", "--train-subset", "512", "--epochs",
            "3", "--raw-dir", str(raw_dir), "--out", str(out), "--no-progress", "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", str(processes), "--heartbeat-timeout", "10", "--init-timeout", "20", *extra]
    return [subprocess.Popen([sys.executable, "-m", "experiments.compare", *args, "--process-id", str(i)], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
            for i in (ids if ids is not None else range(processes))]


def finish(procs, timeout=600):
    """(exit statuses, outputs) of ``procs``; on a timeout they are killed with their children (no process of a
    hung test outlives it)."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        raise
    return [p.returncode for p in procs], [o + e for o, e in outs]


@pytest.fixture(scope="session")
def uninterrupted(raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    codes, texts = finish(compare_procs(raw_dir, out, free_port()))
    assert codes == [0, 0], texts
    return out, texts


@pytest.mark.slow
def test_a_two_process_study_writes_once_from_process_zero(uninterrupted):
    out, texts = uninterrupted
    (result,) = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    assert result["environment"]["process_count"] == 2 and len(result["history"]) == 3
    assert "4 devices (jit, 2 processes)" in texts[0] and "wrote" in texts[0]
    assert "saves inside an epoch every 10 minutes" in texts[0]
    assert "epoch" not in texts[1] and "wrote" not in texts[1]  # process 1 trains silently
    assert not any("Traceback" in t or "[Gloo]" in t or " @ 0x" in t for t in texts)
    assert (out / "report.md").exists() and len(list(out.glob("tensorboard/*/events.*"))) == 1


@pytest.mark.slow
def test_a_killed_process_stops_the_other_in_bounded_time_and_the_rerun_resumes_exactly(uninterrupted, raw_dir,
                                                                                        tmp_path):
    out = tmp_path / "killed"
    procs = compare_procs(raw_dir, out, free_port())
    deadline = time.monotonic() + 300
    while not list(out.glob("*/manifests/1.json")):  # epoch 1 is on disk
        assert time.monotonic() < deadline and procs[0].poll() is None, "no checkpoint of epoch 1"
        time.sleep(0.2)
    os.killpg(procs[1].pid, signal.SIGKILL)  # the process and its supervised child
    killed = time.monotonic()
    procs[0].wait(timeout=120)
    waited = time.monotonic() - killed
    _, err = procs[0].communicate()
    assert procs[0].returncode == distributed.LOST_PEER and waited < 60, (procs[0].returncode, waited, err[-2000:])
    assert err.strip().splitlines()[-1].startswith("compare: error: another process of this run stopped")
    assert "Traceback" not in err and " @ 0x" not in err and "absl" not in err
    procs[1].communicate()
    codes, texts = finish(compare_procs(raw_dir, out, free_port()))
    assert codes == [0, 0], texts
    assert "resuming after epoch" in texts[0]
    same_history(out, uninterrupted)


def same_history(out: Path, uninterrupted) -> None:
    (ours,) = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    (theirs,) = [json.loads(p.read_text()) for p in uninterrupted[0].glob("*/results.json")]
    assert len(ours["history"]) == len(theirs["history"]) == 3
    for a, b in zip(ours["history"], theirs["history"]):
        assert {k: v for k, v in a.items() if k != "epoch_time_s"} == {k: v for k, v in b.items() if k != "epoch_time_s"}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["steps", "damaged", "minutes", "sigterm"])
def test_two_processes_stopped_inside_an_epoch_resume_at_the_next_step_exactly(uninterrupted, raw_dir, tmp_path,
                                                                               case):
    """Two processes of two devices, stopped as both make epoch 2's third batch (global batch 7 of 4-step epochs):
    - steps: a save after every step (collective; it once deadlocked at the epoch's end, where only process 0
      dropped the saves inside the epoch), SIGKILL: the rerun resumes after epoch 2's second step;
    - damaged: the same, with that save damaged since: process 0 moves it aside, both start epoch 2 again;
    - minutes: saves by the minute (0.0001: at every probe, where the processes agree), SIGKILL: the rerun resumes
      after the last step saved inside epoch 2;
    - sigterm: SIGTERM to both (a preempted job), saves by the minute (the default 10): both agree to stop at the
      same step, save it and exit 143 with the one line; the rerun resumes from there.
    Every time the history equals that of the run never stopped (which saved nothing inside its epochs)."""
    out = tmp_path / "run"
    every = {"steps": "checkpoint_every_steps=1", "damaged": "checkpoint_every_steps=1",
             "minutes": "checkpoint_every_minutes=0.0001", "sigterm": "checkpoint_every_minutes=10"}[case]
    fault = "sigterm-at-step:7" if case == "sigterm" else "sigkill-at-step:7"
    codes, texts = finish(compare_procs(raw_dir, out, free_port(), "--set", every, fault=fault), timeout=300)
    (run,) = out.glob("mnist_*")
    assert not (run / "results.json").exists()
    saved = [p.name for p in (run / checkpoint.PARTIAL).iterdir() if p.name.isdigit()]
    if case == "sigterm":
        assert codes == [143, 143], texts
        assert texts[0].strip().splitlines()[-1].startswith("compare: stopped by SIGTERM"), texts[0]
        assert "SIGTERM: stopping after a step all processes agree on (within seconds), which is saved" in texts[0]
        assert "Traceback" not in texts[0] + texts[1]
    else:
        assert all(codes), texts  # killed
        assert saved == ["6"] if case in ("steps", "damaged") else saved and 4 < int(saved[0]) <= 6, saved
    if case == "damaged":
        for f in (run / checkpoint.PARTIAL / "6" / "state").rglob("*"):
            if f.is_file() and f.stat().st_size > 64:
                f.write_bytes(b"\0" * f.stat().st_size)
    codes, texts = finish(compare_procs(raw_dir, out, free_port(), "--set", every), timeout=300)
    assert codes == [0, 0], texts
    if case == "damaged":
        assert "the checkpoint inside epoch 2 (step 6) cannot be used" in texts[0], texts[0]
        assert "resuming after epoch 1 " in texts[0] and "resuming epoch 2" not in texts[0], texts[0]
    elif saved:  # sigterm: a save inside epoch 2 where the processes agreed to stop before its end
        assert f"resuming epoch 2 after its step {int(saved[0]) - 4} of 4" in texts[0], texts[0]
    else:
        assert "resuming after epoch 2 " in texts[0], texts[0]
    assert ("saves inside an epoch every step" if case in ("steps", "damaged") else "saves inside an epoch every")\
        in texts[0]
    same_history(out, uninterrupted)


def test_unreachable_coordinator_and_mismatched_processes_are_one_line_exit_2(raw_dir, tmp_path):
    """Both cases at once (each mostly waits for its timeout)."""
    unreachable = free_port()
    port = next(p for p in iter(free_port, None) if p != unreachable)
    lone = compare_procs(raw_dir, tmp_path / "a", unreachable, "--init-timeout", "3", ids=[1])  # no process 0
    host = compare_procs(raw_dir, tmp_path / "b", port, "--init-timeout", "5", ids=[0])
    time.sleep(1)
    stranger = compare_procs(raw_dir, tmp_path / "b", port, "--init-timeout", "5", processes=3, ids=[2])
    (code,), (text,) = finish(lone, timeout=120)
    assert code == 2 and text.strip().splitlines()[-1].startswith("compare: error: the 2 processes did not all join")
    (code,), (text,) = finish(stranger, timeout=120)
    assert code == 2 and "compare: error: process 2 is not one of the processes" in text, text[-2000:]
    (code,), (text,) = finish(host, timeout=120)
    assert code == 2 and text.strip().splitlines()[-1].startswith("compare: error:")
    for t in (text,):
        assert "Traceback" not in t and " @ 0x" not in t
