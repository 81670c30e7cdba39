"""The errors jaxres reports as one line, and the stop signals, without JAX (the CLI imports these before it
knows whether it will train: ``--help``, ``--list-keys`` and ``--dry-run`` start no JAX)."""
from __future__ import annotations

import signal


class DataError(ValueError):
    """A dataset cannot be read: the message names the file or setting and the fix."""


class CheckpointError(ValueError):
    """A run directory cannot be used as asked: the message says why and what to do."""


class RunLocked(CheckpointError):
    """Another live process is training this run."""


# What a scheduler sends before it stops a job: SIGTERM (preemption, scancel, the end of a grace period)
# and SIGUSR1 (SLURM's warning ahead of the time limit with #SBATCH --signal=B:USR1@120). Both stop a run
# like Ctrl-C: the checkpoint being written is finished, the lock released, finished epochs kept.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Stopped(KeyboardInterrupt):
    """A stop signal (``STOP_SIGNALS``) arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_stop_signals() -> dict:
    """Make SIGTERM and SIGUSR1 raise ``Stopped`` in the main thread (as SIGINT raises KeyboardInterrupt);
    returns the previous handlers, for ``signal.signal`` to put back."""
    def stop(signum, frame):
        raise Stopped(signum)

    return {s: signal.signal(s, stop) for s in STOP_SIGNALS}
