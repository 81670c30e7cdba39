"""Checkpoints: exact resume after SIGKILL, fallback from broken checkpoints, device-count change, config
mismatch, damaged config files, and the per-run lock."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxres import checkpoint, models, stopping, train

ROOT = Path(__file__).resolve().parents[1]


def run(raw, run_dir, epochs, n_dev=1, kill=None, devices=None, precision="float32", every_steps=0):
    """tests/run_for_resume.py on the synthetic files ``raw`` in a subprocess with ``devices`` CPU devices."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXRES_TEST_PRECISION=precision,
               JAXRES_TEST_EVERY_STEPS=str(every_steps))
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices or n_dev}"])
    cmd = [sys.executable, str(ROOT / "tests" / "run_for_resume.py"), str(run_dir), str(raw), str(epochs), str(n_dev)]
    out = subprocess.run(cmd + [str(k) for k in (kill or ())], capture_output=True, text=True, env=env, timeout=600)
    return out


def finals(run_dir):
    with np.load(Path(run_dir) / "final.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def history(run_dir):
    return json.loads((Path(run_dir) / "history.json").read_text())


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, raw_dir):
    d = tmp_path_factory.mktemp("straight")
    out = run(raw_dir, d, 3)
    assert out.returncode == 0, out.stderr[-3000:]
    return d


@pytest.fixture(scope="session")
def uninterrupted_bf16(tmp_path_factory, raw_dir):
    d = tmp_path_factory.mktemp("straight_bf16")
    out = run(raw_dir, d, 3, precision="bfloat16")
    assert out.returncode == 0, out.stderr[-3000:]
    return d


# bfloat16 in make test-slow: the same resume path, with bf16 compute (XLA's on a CPU without AVX512_BF16)
@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_resume_after_sigkill_equals_an_uninterrupted_run_bitwise(precision, request, tmp_path, raw_dir):
    uninterrupted = request.getfixturevalue("uninterrupted" if precision == "float32" else "uninterrupted_bf16")
    killed = run(raw_dir, tmp_path, 3, kill=(1, 2), precision=precision)  # during epoch 2, after epoch 1's checkpoint
    assert killed.returncode == -9 and "killing myself" in killed.stdout, killed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    resumed = run(raw_dir, tmp_path, 3, precision=precision)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stdout + resumed.stderr
    for a, b in zip(finals(uninterrupted), finals(tmp_path), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise, on CPU
    assert history(tmp_path) == history(uninterrupted)
    if precision == "bfloat16":  # parameters and optimizer state stay float32; bf16 is only in the compute
        assert {a.dtype for a in finals(tmp_path)} == {np.dtype(np.float32), np.dtype(np.int32)}
    # Running the finished run again trains nothing and reports the same history.
    again = run(raw_dir, tmp_path, 3, precision=precision)
    assert "nothing to do" in again.stdout + again.stderr and history(tmp_path) == history(uninterrupted)


@pytest.fixture(scope="session")
def uninterrupted_2dev(tmp_path_factory, raw_dir):
    d = tmp_path_factory.mktemp("straight_2dev")
    out = run(raw_dir, d, 3, n_dev=2)
    assert out.returncode == 0, out.stderr[-3000:]
    return d


@pytest.mark.parametrize("n_dev", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_kill_inside_an_epoch_resumes_at_the_next_step_bitwise(n_dev, request, tmp_path, raw_dir):
    """Checkpoints after every step; SIGKILL as epoch 2's third step (of 4) is about to run: the resume continues
    after its second step, with the same batches, augmentation and step keys, and its metric sums and layer norms
    so far, and ends bitwise equal to a run never stopped (which saved nothing inside its epochs). The epoch
    checkpoints kept (--keep) are the same; the save inside the epoch is gone once the epoch is saved whole."""
    straight = request.getfixturevalue("uninterrupted" if n_dev == 1 else "uninterrupted_2dev")
    killed = run(raw_dir, tmp_path, 3, n_dev=n_dev, kill=(1, 2), every_steps=1)
    assert killed.returncode == -9 and "killing myself" in killed.stdout, killed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    assert [p.name for p in (tmp_path / checkpoint.PARTIAL).iterdir() if p.name.isdigit()] == ["6"]  # 4 + 2 steps
    resumed = run(raw_dir, tmp_path, 3, n_dev=n_dev, every_steps=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming epoch 2 after its step 2 of 4" in resumed.stdout + resumed.stderr
    for a, b in zip(finals(straight), finals(tmp_path), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise, on CPU
    assert history(tmp_path) == history(straight)
    kept = lambda d: sorted(p.name for p in (Path(d) / "checkpoints").iterdir() if p.name.isdigit())  # noqa: E731
    assert kept(tmp_path) == kept(straight)
    assert not [p for p in (tmp_path / checkpoint.PARTIAL).iterdir() if p.name.isdigit()]


def test_a_save_inside_an_epoch_that_cannot_be_verified_falls_back_to_the_epoch(tmp_path, raw_dir):
    killed = run(raw_dir, tmp_path, 2, kill=(1, 3), every_steps=1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (step_dir,) = [p for p in (tmp_path / checkpoint.PARTIAL).iterdir() if p.name.isdigit()]
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            f.write_bytes(b"\0" * f.stat().st_size)  # same size, other bytes
    resumed = run(raw_dir, tmp_path, 2, every_steps=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert "the checkpoint inside epoch 2 (step 7) cannot be used" in text and "resuming after epoch 1" in text
    assert "resuming epoch 2 after" not in text and (tmp_path / "checkpoints.broken").is_dir()


def test_broken_latest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path, raw_dir):
    import shutil

    shutil.copytree(uninterrupted, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    accs = [h["test_accuracy"] for h in history(uninterrupted)]
    best = max(range(3), key=lambda i: (accs[i], i)) + 1  # ties: orbax keeps the later one
    kept = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert kept == sorted({2, 3, best}), accs  # the last 2 plus the best
    for f in (ckpts / "3" / "state").rglob("*"):  # truncate every file of the newest state
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    out = run(raw_dir, tmp_path / "run", 3)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "checkpoint of epoch 3" in text and "cannot be used" in text and "resuming after epoch 2" in text
    assert (tmp_path / "run" / "checkpoints.broken").is_dir()  # moved aside, not deleted
    for a, b in zip(finals(uninterrupted), finals(tmp_path / "run"), strict=True):
        np.testing.assert_array_equal(a, b)  # epoch 3 retrained from epoch 2 gives the same result

    (ckpts / "2" / "meta" / "metadata").unlink(missing_ok=True)  # delete a file of another checkpoint
    for p in (ckpts / "2").rglob("*"):
        if p.is_file() and p.parent.name == "meta":
            p.unlink()
    out = run(raw_dir, tmp_path / "run", 3)  # epoch 3 was re-saved, so it is used; 2 is not needed
    assert out.returncode == 0 and "nothing to do" in out.stdout + out.stderr


@pytest.mark.slow  # two subprocesses, one compiling for 4 devices
@pytest.mark.parametrize("first, then", [(4, 1), (1, 4)])  # 1 -> 4: restored into the sharded-jit mesh
def test_checkpoint_resumes_on_another_device_count(tmp_path, raw_dir, first, then):
    before = run(raw_dir, tmp_path, 1, n_dev=first)
    assert before.returncode == 0, before.stderr[-3000:]
    after = run(raw_dir, tmp_path, 2, n_dev=then)
    assert after.returncode == 0, after.stderr[-3000:]
    assert "resuming after epoch 1" in after.stdout + after.stderr
    h = history(tmp_path)
    assert len(h) == 2 and h[1]["test_examples"] == 100 and np.isfinite(h[1]["train_loss"])


def test_keep_last_k_plus_the_best(tmp_path):
    state = train.create_train_state(models.seed_cnn(widths=(4,)), jax.random.key(0), (8, 8, 1))
    with checkpoint.Checkpointer(tmp_path, {"x": 1}, keep=2) as ckpt:
        hist = []
        for acc in (0.5, 0.9, 0.6, 0.7, 0.65):
            hist.append({"test_accuracy": acc})
            ckpt.save(state, hist)
            ckpt.wait()
        assert ckpt.epochs() == [2, 4, 5]  # best (epoch 2, 0.9) plus the last two
    with checkpoint.Checkpointer(tmp_path, {"x": 1}, keep=2) as ckpt:  # a resumed or extended run
        restored, hist = ckpt.restore_latest(state)
        for acc in (0.7, 0.8):
            hist.append({"test_accuracy": acc})
            ckpt.save(restored, hist)
        assert ckpt.epochs() == [2, 6, 7]  # the checkpoints of before the restart are pruned too
    assert sorted(p.stem for p in (tmp_path / "manifests").glob("*.json")) == ["2", "6", "7"]


def test_kept_epochs_outlive_the_last_k_and_restore_by_number(tmp_path):
    """keep_epochs (experiments.compare --keep-epochs, for probes after training): those epochs stay beside the last
    ``keep`` and the best, also after a restart; restore_epoch reads one of them, and a damaged one is one line."""
    state = train.create_train_state(models.seed_cnn(widths=(4,)), jax.random.key(0), (8, 8, 1))
    with checkpoint.Checkpointer(tmp_path, {"x": 1}, keep=1, keep_epochs=(1, 3)) as ckpt:
        hist = []
        for acc in (0.5, 0.6, 0.7, 0.8):
            hist.append({"test_accuracy": acc})
            ckpt.save(state.replace(step=len(hist)), hist)
        assert ckpt.epochs() == [1, 3, 4]  # epoch 2, neither kept nor the best nor the last, is pruned
    with checkpoint.Checkpointer(tmp_path, {"x": 1}, keep=1, keep_epochs=(1, 3)) as ckpt:
        restored, hist = ckpt.restore_latest(state)
        hist.append({"test_accuracy": 0.9})
        ckpt.save(restored.replace(step=5), hist)
        assert ckpt.epochs() == [1, 3, 5]
        got, hist = ckpt.restore_epoch(state, 3)
        assert int(got.step) == 3 and [h["test_accuracy"] for h in hist] == [0.5, 0.6, 0.7]
        data = next(p for p in (tmp_path / "checkpoints" / "1" / "state").rglob("*") if p.is_file()
                    and p.stat().st_size > 100)
        data.write_bytes(b"\0" * data.stat().st_size)
        with pytest.raises(checkpoint.CheckpointError, match=r"^checkpoint of epoch 1 in .* cannot be used \(") as e:
            ckpt.restore_epoch(state, 1)
        assert "\n" not in str(e.value) and (tmp_path / "checkpoints" / "1").is_dir()  # a reader moves nothing
    with pytest.raises(checkpoint.CheckpointError, match="keep_epochs must be epochs from 1, got 0"):
        checkpoint.Checkpointer(tmp_path / "other", {"x": 1}, keep_epochs=(0,))


def test_the_minutes_between_saves_inside_an_epoch_count_from_the_last_save_of_any_kind(tmp_path, monkeypatch):
    state = train.create_train_state(models.seed_cnn(widths=(4,)), jax.random.key(0), (8, 8, 1))
    now = [1000.0]
    monkeypatch.setattr(stopping, "time", SimpleNamespace(monotonic=lambda: now[0], strftime=time.strftime))
    with checkpoint.Checkpointer(tmp_path, {"x": 1}, every_minutes=10) as ckpt:
        now[0] += 9 * 60
        assert not ckpt.policy.due(1)
        now[0] += 60
        assert ckpt.policy.due(2)
        ckpt.save(state, [{"test_accuracy": 0.5}])  # an epoch saved whole: ten more minutes before the next
        now[0] += 9 * 60
        assert not ckpt.policy.due(3)
        ckpt.save_partial(state, [{"test_accuracy": 0.5}], 3, {"loss": np.zeros(())})
        now[0] += 9 * 60
        assert not ckpt.policy.due(4)
        now[0] += 60
        assert ckpt.policy.due(5)


def test_a_run_dir_with_another_config_is_refused(tmp_path):
    checkpoint.Checkpointer(tmp_path, {"model": {"name": "seed_cnn"}, "lr": 0.001}).close()
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"different config \(model.name: 'seed_cnn' there, 'seed_resnet' asked\)"):
        checkpoint.Checkpointer(tmp_path, {"model": {"name": "seed_resnet"}, "lr": 0.001})


def test_config_json_is_written_whole_and_a_damaged_one_is_named(tmp_path):
    checkpoint.Checkpointer(tmp_path, {"x": 1}).close()
    assert json.loads((tmp_path / "config.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    (tmp_path / "config.json").write_text("")  # as if killed during a non-atomic write
    with pytest.raises(checkpoint.CheckpointError, match=r"config.json is damaged \(not JSON\); .*delete"):
        checkpoint.Checkpointer(tmp_path, {"x": 1})


# ------------------------------------------------------------------ the per-run lock
LOCK_HOLDER = """
import sys, time
from jaxres.checkpoint import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_run_lock_names_the_live_holder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import signal

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path), "60"], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(checkpoint.RunLocked, match=rf"is being trained by pid {holder.pid} on .* since"):
            checkpoint.RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = checkpoint.RunLock(tmp_path).acquire()  # the killed holder's lock is free, and it says whose it was
    assert lock.took_over is not None and f"pid {holder.pid}" in lock.took_over
    lock.release()
    again = checkpoint.RunLock(tmp_path).acquire()  # released cleanly: nothing to take over
    assert again.took_over is None
    again.release()
