"""Several processes, one study: ``jax.distributed`` from flags or the environment, and a supervisor
that turns the distributed runtime's fatal aborts into one line.

Every process runs the same command with its own process id (``--coordinator HOST:PORT
--num-processes N --process-id I``, or ``JAXRES_COORDINATOR`` / ``JAXRES_NUM_PROCESSES`` /
``JAXRES_PROCESS_ID``), or ``--distributed auto`` where JAX finds them itself (SLURM, TPU pods,
Open MPI). Process 0 hosts the coordinator. On CPUs the collectives go over gloo (TCP).

JAX's runtime does not raise when it cannot join a run or when another process dies: it logs a
fatal error from C++ and aborts (SIGABRT) after ``init_timeout`` / ``heartbeat_timeout`` seconds. So a
distributed ``compare`` runs its work in a child process and watches it (``supervise``): the child's
output passes through, the runtime's C++ log lines are kept out of the terminal (all of them go to a
log file), and an abort becomes one line saying what happened and what to do, exit status 2 when the
run could not start (unreachable coordinator, process ids or counts that do not match) and 3 when
another process of a running study stopped. Finished epochs are checkpointed by every process
together, so the same commands, started again, resume.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ENV = {"coordinator": "JAXRES_COORDINATOR", "num_processes": "JAXRES_NUM_PROCESSES",
       "process_id": "JAXRES_PROCESS_ID"}
CHILD_ENV = "JAXRES_SUPERVISED"  # set in the supervised child: it does the work
READY = "distributed: process"    # the child's first line once it has joined the run
LOST_PEER = 3                     # exit status: another process of a running study stopped


class DistributedError(ValueError):
    """The distributed setup given cannot work; the message says why (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """How this process joins a multi-process run (``active`` False: a single process)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    init_timeout: int = 300          # seconds for every process to join (JAX's default)
    heartbeat_timeout: int = 100     # seconds without a sign of life before a process counts as dead

    @property
    def active(self) -> bool:
        return self.auto or self.coordinator is not None


def setup_from(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False, init_timeout: int = 300, heartbeat_timeout: int = 100,
               environ: dict | None = None) -> Setup:
    """The setup from flags, with the ``JAXRES_*`` variables filling what the flags leave out; checked."""
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV["coordinator"]) or None
    values = {}
    for key, given in (("num_processes", num_processes), ("process_id", process_id)):
        text = given if given is not None else env.get(ENV[key])
        try:
            values[key] = None if text in (None, "") else int(text)
        except ValueError:
            raise DistributedError(f"{ENV[key]}={text!r} must be an integer") from None
    n, i = values["num_processes"], values["process_id"]
    for what, t in (("--init-timeout", init_timeout), ("--heartbeat-timeout", heartbeat_timeout)):
        if t < 1:
            raise DistributedError(f"{what} must be at least 1 second, got {t}")
    if auto:
        if coordinator or n is not None or i is not None:
            raise DistributedError("--distributed auto finds the coordinator and process ids itself; "
                                   "give either it or --coordinator/--num-processes/--process-id")
        return Setup(auto=True, init_timeout=init_timeout, heartbeat_timeout=heartbeat_timeout)
    if coordinator is None:
        if n is not None or i is not None:
            raise DistributedError("--num-processes and --process-id need --coordinator HOST:PORT")
        return Setup()
    if not re.fullmatch(r"\[?[\w.:-]+\]?:\d{1,5}", coordinator) or not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536:
        raise DistributedError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if n is None or i is None:
        raise DistributedError("--coordinator needs --num-processes N and --process-id I (or JAXRES_NUM_PROCESSES, "
                               "JAXRES_PROCESS_ID)")
    if n < 1:
        raise DistributedError(f"--num-processes must be at least 1, got {n}")
    if not 0 <= i < n:
        raise DistributedError(f"--process-id must be between 0 and {n - 1} for {n} processes, got {i}")
    return Setup(coordinator, n, i, False, init_timeout, heartbeat_timeout)


def initialize(setup: Setup) -> None:
    """Join the run ``setup`` describes (before anything else touches a device); nothing when inactive.
    Prints ``READY`` with the process's place once it has joined."""
    if not setup.active:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = dict(initialization_timeout=setup.init_timeout, heartbeat_timeout_seconds=setup.heartbeat_timeout)
    if setup.auto:
        jax.distributed.initialize(**kw)
    else:
        jax.distributed.initialize(setup.coordinator, setup.num_processes, setup.process_id, **kw)
    print(f"{READY} {jax.process_index()} of {jax.process_count()} ready ({jax.local_device_count()} local "
          f"devices, {jax.device_count()} in all)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the supervisor
_RUNTIME_LINE = re.compile(r"^(\[Gloo\]|\s+@\s+0x|\*\*\* Check failure)")   # single lines
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s")            # may go on for several lines
_OURS = ("compare:", "warning:", "Traceback", "distributed:", "interrupt:")


def _is_runtime_noise(line: str, in_block: bool) -> tuple[bool, bool]:
    """(hide this line, inside a multi-line runtime log message after it). A C++ log message (absl's
    ``E1129 07:11:24.133042 ...`` format) runs on until a line of jaxres's own."""
    if _ABSL_LINE.match(line):
        return True, True
    if _RUNTIME_LINE.match(line):
        return True, in_block
    if in_block and not line.startswith(_OURS):
        return True, True
    return False, False


def explain(log: str, joined: bool, setup: Setup) -> tuple[str, int]:
    """One line for an abort of the distributed runtime, and the exit status."""
    fatal = next((line for line in log.splitlines() if line.startswith("F") and "absl::Status" in line), "")
    status = fatal.split("absl::Status:", 1)[1].strip() if fatal else ""
    where = setup.coordinator or "the coordinator found by --distributed auto"
    if not joined:
        if "Unexpected task" in status or "INVALID_ARGUMENT" in status:
            return (f"process {setup.process_id} is not one of the processes the coordinator at {where} expects "
                    "(another --num-processes there, or this --process-id taken): give every process the same "
                    "--num-processes and its own --process-id", 2)
        if "DEADLINE_EXCEEDED" in status or "UNAVAILABLE" in status:
            return (f"the {setup.num_processes or ''} processes did not all join through {where} within "
                    f"{setup.init_timeout} s: start every process (process 0 hosts the coordinator) with the same "
                    "--coordinator and --num-processes, and check that the address is reachable", 2)
        return f"could not join the distributed run through {where} ({status or 'aborted'})", 2
    return ("another process of this run stopped (died, was killed or became unreachable), so this one stopped too; "
            "finished epochs are kept: start every process again with the same command to resume", LOST_PEER)


def _pump(stream, sink, lines: list[str], joined: threading.Event) -> None:
    """Copy a child's output stream to ``sink`` (keeping every line in ``lines``), without the runtime's C++ log."""
    in_block = False
    for line in stream:
        lines.append(line)
        if line.startswith(READY):
            joined.set()
        hide, block = _is_runtime_noise(line, in_block)
        in_block = block and sink is sys.stderr  # jaxres prints its run log to stdout: never hidden
        if not hide:
            sink.write(line)
            sink.flush()


def _keep_log(log_path: Path, log: str) -> str:
    """Save the child's whole output; the words that point to it, or "" where it could not be written."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(log)
        return f" (the runtime's log: {log_path})"
    except OSError:
        return ""


def supervise(argv: list[str], setup: Setup, log_path: Path, module: str = "experiments.compare") -> int:
    """Run ``python -m module argv`` as a child that joins the distributed run, pass its output through
    without the runtime's C++ log, and turn an abort into one line; returns the exit status."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    lines: list[str] = []
    joined = threading.Event()
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, lines, joined), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, lines, joined), daemon=True)]
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        for t in pumps:
            t.start()
        rc = proc.wait()
        for t in pumps:
            t.join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    log = "".join(lines)
    saved = _keep_log(log_path, log)
    if rc >= 0 and rc != 128 + signal.SIGABRT:
        return rc
    if -rc == signal.SIGABRT or rc == 128 + signal.SIGABRT:
        message, status = explain(log, joined.is_set(), setup)
    else:
        message, status = f"stopped by signal {signal.Signals(-rc).name}", 128 - rc
    print(f"compare: error: {message}{saved}", file=sys.stderr, flush=True)
    return status
