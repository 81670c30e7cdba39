"""Run ``experiments.compare`` with one injected fault, for tests/test_faults.py.

usage: python tests/fault_run.py FAULT [compare arguments ...]
FAULT: ``none``; ``sigint-in-save:EPOCH`` (a Ctrl-C arrives just as epoch EPOCH's checkpoint starts
to be written; ``sigterm-in-save``, ``sigusr1-in-save``: SIGTERM, SIGUSR1 instead); ``fsize-at:EPOCH:BYTES`` (from epoch EPOCH's checkpoint on, no file may grow beyond
BYTES: writes beyond fail with EFBIG, as they fail with ENOSPC on a full disk; RLIMIT_FSIZE needs no
privileges); ``sigterm-at-step:N`` (SIGTERM while training batch N of the process is made); ``sigint-in-compile`` (a
Ctrl-C while the train step is traced, in its first call, before XLA compiles it).
"""
import os
import resource
import signal
import sys

fault, argv = sys.argv[1], sys.argv[2:]
if fault.split(":")[0] in ("sigint-in-save", "sigterm-in-save", "sigusr1-in-save"):
    import orbax.checkpoint as ocp

    epoch, real_save = int(fault.split(":")[1]), ocp.CheckpointManager.save
    signum = getattr(signal, fault.split("-")[0].upper())

    def save(self, step, *args, **kwargs):
        if step == epoch:
            os.kill(os.getpid(), signum)
        return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save
elif fault.startswith("fsize-at:"):
    import orbax.checkpoint as ocp

    epoch, limit = map(int, fault.split(":")[1:])
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == epoch:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save
elif fault.startswith("sigterm-at-step:"):  # SIGTERM as training batch N (counted over the run, from 1) is made
    from jaxres import data

    n, real_batches = int(fault.split(":")[1]), data.Dataset.train_batches
    made = [0]

    def train_batches(self, *args, **kwargs):
        for batch in real_batches(self, *args, **kwargs):
            made[0] += 1
            if made[0] == n:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    data.Dataset.train_batches = train_batches
elif fault == "sigint-in-compile":  # Ctrl-C while the train step is traced and compiled (its first call)
    from jaxres import train

    real_step, sent = train.train_step, []

    def train_step(*args, **kwargs):  # runs only while jax traces the step, inside its first call
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return real_step(*args, **kwargs)

    train.train_step = train_step
elif fault != "none":
    sys.exit(f"unknown fault {fault}")

from experiments import compare  # noqa: E402

sys.exit(compare.main(argv))
