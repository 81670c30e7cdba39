"""When a run saves inside an epoch, and how several processes agree to save or to stop: ``SavePolicy``.

Owns the save schedule inside an epoch (every ``every_steps`` steps, or every ``every_minutes`` minutes since the
last save of any kind) and the agreement between processes (``agree``). The stop signals themselves are recorded by
``jaxres.errors`` (``pending_stop``, ``defer``, ``raise_if_stopped``); the checkpoints are written by
``jaxres.checkpoint.Checkpointer``, which tells the policy when it saved (``saved``). ``jaxres.train.fit`` asks the
policy after every step. No JAX is needed for one process; several gather a few integers at rare probes.
Also the end of a run by its history (JAX-free, for the report too): ``best_epoch`` (chosen on the validation split
where one is held out) and ``early_stop`` (``patience``).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxres import errors

PROBE_SECONDS = 5.0  # several processes agree on saving and stopping about this often (``SavePolicy.agree``)


class SavePolicy:
    """The save schedule inside an epoch of one run, and the stop agreement of its processes."""

    def __init__(self, every_steps: int = 0, every_minutes: float = 0.0):
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self._last_save = time.monotonic()
        self._probe_at, self._probed, self._step_s = 0, None, 0.0  # several processes: see ``agree``

    def saved(self) -> None:
        """A save of any kind just ended: the minutes to the next save inside an epoch count from now."""
        self._last_save = time.monotonic()

    def due(self, done: int) -> bool:
        """Whether a save inside the epoch is due after its ``done``-th step (``every_steps``, ``every_minutes``), by
        this process's clock."""
        return bool((self.every_steps and done % self.every_steps == 0) or
                    (self.every_minutes and time.monotonic() - self._last_save >= 60 * self.every_minutes))

    def agree(self, done: int | None, inside: bool, stop: int | None) -> tuple[bool, int | None]:
        """After step ``done`` of an epoch (``inside``: not its last; None: at the epoch's end, once it is saved), with
        ``stop`` this process's pending stop signal or None: (whether to save the state now, the signal that stops the
        run or None). One process: a save where one is due (``due``) or a stop was asked for.

        Several processes must all save, or stop, at the same step (a save is collective). They agree at probes, about
        every ``PROBE_SECONDS`` of training: at an epoch's first step, then doubling until process 0 has timed a step,
        then as its step time says, and at every epoch's end. At a probe process 0's clock decides whether the
        minutes have passed, and any process's stop signal stops them all, after a save. Saves every
        ``every_steps`` need no agreement. An agreed stop becomes this process's pending stop too. A probe gathers a
        few integers from every process (and waits for the steps before it), so it is rare: about one per
        ``PROBE_SECONDS``."""
        import jax

        if jax.process_count() == 1:
            return stop is not None or (inside and self.due(done)), stop
        steps_due = inside and bool(self.every_steps) and done % self.every_steps == 0
        if done is not None and (not inside or done < self._probe_at):
            return steps_due, None  # a stop asked for here waits for the next probe
        from jax.experimental import multihost_utils

        now, proposal = time.monotonic(), 0  # the step of the next probe; 0 at the epoch's end: the next epoch's first
        if done is not None:
            if self._probed is not None and done > self._probed[0]:
                self._step_s = (now - self._probed[1]) / (done - self._probed[0])
            proposal = done + (max(1, int(PROBE_SECONDS / self._step_s)) if self._step_s else max(1, done))
        self._probed = (done, now) if done is not None else None
        timed = inside and bool(self.every_minutes) and now - self._last_save >= 60 * self.every_minutes
        everyone = np.asarray(multihost_utils.process_allgather(np.array([stop or 0, timed, proposal], np.int64)))
        self._probe_at = int(everyone[0, 2])
        signals = [int(s) for s in everyone[:, 0] if s]
        agreed = signals[0] if signals else None
        if agreed is not None:
            errors.defer(agreed)  # this process stops too (``errors.raise_if_stopped``), whichever got the signal
        return inside and (steps_due or bool(everyone[0, 1]) or agreed is not None), agreed


def best_epoch(history: list[dict]) -> dict[str, Any] | None:
    """The run's best epoch and its metrics, chosen on the validation split where the run holds one out, else on
    the test split (an optimistic number: ``chosen_on`` says which); the first of equal scores. None where no
    epoch was evaluated."""
    on = "validation" if any("validation_accuracy" in h for h in history) else "test"
    scored = [h for h in history if isinstance(h.get(f"{on}_accuracy"), (int, float))]
    if not scored:
        return None
    row = max(scored, key=lambda h: (h[f"{on}_accuracy"], -h["epoch"]))
    return {"epoch": row["epoch"], "chosen_on": on, **{k: row[k] for k in
            ("train_accuracy", "validation_accuracy", "test_accuracy") if k in row}}


def early_stop(history: list[dict], patience: int) -> dict[str, Any] | None:
    """Where ``history`` ends by early stopping: no epoch above its best validation accuracy (``best_epoch``) for
    ``patience`` epochs ({"epoch", "best_epoch", "patience"}); None while it improves, or with ``patience`` 0."""
    best = best_epoch(history) if patience else None
    if best is None or best["chosen_on"] != "validation" or len(history) - best["epoch"] < patience:
        return None
    return {"epoch": len(history), "best_epoch": best["epoch"], "patience": patience}
