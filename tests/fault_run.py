"""Run ``experiments.compare`` with one injected fault, for tests/test_faults.py.

usage: python tests/fault_run.py FAULT [compare arguments ...]
FAULT: ``none``;
``sigint-in-save:EPOCH``: a Ctrl-C arrives just as epoch EPOCH's checkpoint starts to be written
  (``sigterm-in-save``, ``sigusr1-in-save``: SIGTERM, SIGUSR1 instead);
``fsize-at:EPOCH:BYTES``: from epoch EPOCH's checkpoint on, no file may grow beyond BYTES: writes beyond fail
  with EFBIG, as they fail with ENOSPC on a full disk (RLIMIT_FSIZE needs no privileges);
``unwritable-at:EPOCH:HOW``: the run's checkpoints/ folder stops taking new files just before epoch EPOCH's
  checkpoint is written; HOW: ``mount`` (bound onto itself read-only; needs root and a container that allows
  it) or ``attr`` (chattr +i for root, whom chmod does not stop; chmod 555 for a user); the test undoes it;
``sigterm-at-step:N``, ``sigkill-at-step:N``: SIGTERM, SIGKILL while training batch N of the process (counted
  over the run, from 1) is made, after the steps before it and their saves are done;
``sigint-in-compile``: a Ctrl-C while the train step is traced, in its first call, before XLA compiles it;
``sigint-in-import``: a Ctrl-C as JAX starts to be imported (the first second or two of a command).

With several processes the work is done by the child each one starts (``jaxres.distributed.supervise``), which
this script does not reach: there, ``tests/fault_site`` on PYTHONPATH and ``$JAXRES_TEST_FAULT`` install the
fault in the child.
"""
import os
import resource
import signal
import sys


def _before_epoch_save(epoch: int, act) -> None:
    """Call ``act(the run's checkpoints folder)`` just before epoch ``epoch``'s checkpoint is written (not a save
    inside an epoch, which orbax numbers by the global step)."""
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == epoch and str(self.directory).endswith("/checkpoints"):
            act(str(self.directory))
        return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save


def install(fault: str) -> None:
    """Patch this process so that ``fault`` happens (the module docstring)."""
    if fault == "none":
        return
    if fault.split(":")[0] in ("sigint-in-save", "sigterm-in-save", "sigusr1-in-save"):
        signum = getattr(signal, fault.split("-")[0].upper())
        _before_epoch_save(int(fault.split(":")[1]), lambda folder: os.kill(os.getpid(), signum))
    elif fault.startswith("fsize-at:"):
        epoch, limit = map(int, fault.split(":")[1:])

        def limit_file_size(folder):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        _before_epoch_save(epoch, limit_file_size)
    elif fault.startswith("unwritable-at:"):
        import subprocess

        _, epoch, how = fault.split(":")

        def make_read_only(folder):
            if how == "mount":
                subprocess.run(["mount", "--bind", folder, folder], check=True)
                subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
            elif os.geteuid() == 0:
                subprocess.run(["chattr", "+i", folder], check=True)
            else:
                os.chmod(folder, 0o555)

        _before_epoch_save(int(epoch), make_read_only)
    elif fault.split(":")[0] in ("sigterm-at-step", "sigkill-at-step"):  # as training batch N (from 1) is made
        from jaxres import data

        n, real_batches = int(fault.split(":")[1]), data.Dataset.train_batches
        signum = getattr(signal, fault.split("-")[0].upper())
        made = [0]

        def train_batches(self, *args, **kwargs):
            for batch in real_batches(self, *args, **kwargs):
                made[0] += 1
                if made[0] == n:
                    os.kill(os.getpid(), signum)
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
    elif fault == "sigint-in-import":  # Ctrl-C while Python looks for JAX's package, the first time
        class SendOnFirstLookup:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name == "jax":
                    sys.meta_path.remove(SendOnFirstLookup)
                    os.kill(os.getpid(), signal.SIGINT)
                return None  # found by the other finders

        sys.meta_path.insert(0, SendOnFirstLookup)
    else:
        sys.exit(f"unknown fault {fault}")


if __name__ == "__main__":
    install(sys.argv[1])
    from experiments import compare

    sys.exit(compare.main(sys.argv[2:]))
