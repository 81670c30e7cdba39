"""Run ``experiments.compare`` with one injected fault, for tests/test_faults.py.

usage: python tests/fault_run.py FAULT [compare arguments ...]
FAULT: ``none``; ``sigint-in-save:EPOCH`` (a Ctrl-C arrives just as epoch EPOCH's checkpoint starts
to be written; ``sigterm-in-save``, ``sigusr1-in-save``: SIGTERM, SIGUSR1 instead); ``fsize-at:EPOCH:BYTES`` (from epoch EPOCH's checkpoint on, no file may grow beyond
BYTES: writes beyond fail with EFBIG, as they fail with ENOSPC on a full disk; RLIMIT_FSIZE needs no
privileges).
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
elif fault != "none":
    sys.exit(f"unknown fault {fault}")

from experiments import compare  # noqa: E402

sys.exit(compare.main(argv))
