"""The errors jaxres reports as one line, and the stop signals, without JAX (the CLI imports these before it
knows whether it will train: ``--help``, ``--list-keys`` and ``--dry-run`` start no JAX)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


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


def interrupt(signum: int) -> KeyboardInterrupt:
    """The exception a signal stops a run with: KeyboardInterrupt for Ctrl-C, ``Stopped`` for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


_deferring = False
_pending: list[int] = []  # the signal that asked the run to stop, until the run acts on it
_training = ""  # within ``training()``: how a stop is acted on while steps are taken (the line a signal prints)
AFTER_STEP = "stopping after the current step, which is saved"
AGREED = "stopping after a step all processes agree on (within seconds), which is saved"


@contextlib.contextmanager
def training(processes: int = 1):
    """Marks the block where steps are taken (``jaxres.train.fit``'s epochs, on ``processes`` processes), for the line
    a stop signal prints."""
    global _training
    before, _training = _training, AFTER_STEP if processes == 1 else AGREED
    try:
        yield
    finally:
        _training = before


@contextlib.contextmanager
def stops_at_step_boundaries():
    """Within the block, Ctrl-C, SIGTERM and SIGUSR1 do not interrupt what is running (an import, a compilation,
    a step): they are recorded, with one line saying so, and training stops at the next step boundary after saving
    that step (``jaxres.train.fit`` asks ``pending_stop``; ``raise_if_stopped`` elsewhere). A second signal
    raises at once. A stop still pending when the block ends is raised then. Main thread only; a block inside
    another changes nothing."""
    global _deferring
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield
        return

    def record(signum, frame):
        if _pending:
            raise interrupt(_pending[0])
        _pending.append(signum)
        what = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
        how = _training or "stopping before training goes on"
        say(f"{what}: {how} (send it again to stop at once)")

    _pending.clear()
    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, *STOP_SIGNALS)}
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for s, h in previous.items():
            signal.signal(s, h)
    raise_if_stopped()


def say(line: str) -> None:
    """``line`` on stderr, on a line of its own: above tqdm's progress bars where one is drawn (else it would be
    printed onto the end of the bar's line)."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # never imported here: this module comes before JAX
    if tqdm is not None and getattr(tqdm, "_instances", None):
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def deferring() -> bool:
    """Whether a ``stops_at_step_boundaries`` block is active (signals are recorded, not raised)."""
    return _deferring


def defer(signum: int) -> None:
    """Record ``signum`` as the pending stop (a signal held while a checkpoint was written, within the block)."""
    if not _pending:
        _pending.append(signum)


def pending_stop() -> int | None:
    """The signal that asked the run to stop, not yet acted on; None if none."""
    return _pending[0] if _pending else None


def raise_if_stopped() -> None:
    """Raise the pending stop (and forget it), if there is one."""
    if _pending:
        raise interrupt(_pending.pop())
