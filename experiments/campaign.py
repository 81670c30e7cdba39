"""The seed protocol at full data on a CPU, as a queue of runs that lasts several sessions.

    nice python -m experiments.campaign --raw-dir ../shared/datasets --out /work/campaign/seed_cpu \\
        --results results/seed_cpu [--commit]

Each entry of ``QUEUE`` is one run of the ``seed_cpu`` study (full splits, 30 CIFAR-10 / 10 MNIST epochs,
batch 128, Adam 1e-3, no normalization, no augmentation), trained one at a time, in order, by the ordinary
command line (``python -m experiments.compare ... --no-report``) on one shared ``--out``, with the compute
settings fixed once for the whole campaign (``COMPUTE``): runs with other settings would not pool in
the report. An interrupted campaign is resumed by the same command: finished runs are not trained
again, the interrupted one continues at its last save inside an epoch.

As soon as a run has finished, its small files (``config.json``, ``results.json``, ``layer_norms.npz``)
are copied to ``--results`` (a folder of the repository, so that they survive a change of machine) and the
report is rebuilt there (``--report-only``: summary, curves, claims, report.md, from those files alone);
``--commit`` also commits that folder (and nothing else) in its git repository.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STUDY = "seed_cpu"
# The order of issue 34: CIFAR-10 seed 0 of the seed's pair and the plain twin first, then the seeds that give
# the claims their intervals, then MNIST's seeds (its seed 0 first: the earlier seed-0 rows ran other settings).
QUEUE: tuple[tuple[str, str, int], ...] = (
    ("cifar10", "seed_cnn", 0), ("cifar10", "seed_resnet", 0), ("cifar10", "seed_plain_twin", 0),
    ("cifar10", "seed_cnn", 1), ("cifar10", "seed_resnet", 1), ("cifar10", "seed_cnn", 2),
    ("cifar10", "seed_resnet", 2), ("cifar10", "seed_plain_twin", 1), ("cifar10", "seed_plain_twin", 2),
    ("mnist", "seed_cnn", 0), ("mnist", "seed_resnet", 0), ("mnist", "seed_cnn", 1), ("mnist", "seed_resnet", 1),
    ("mnist", "seed_cnn", 2), ("mnist", "seed_resnet", 2),
)
# Fixed for every run (docs/benchmarks.md: the fastest validated float32 path on the CPUs these sessions get;
# bfloat16 would need AVX512_BF16 on every machine the campaign resumes on).
COMPUTE = ("compute.precision=float32", "compute.conv=onednn")
COPIED = ("config.json", "results.json", "layer_norms.npz")
MAX_COPIED_BYTES = 20 << 20  # layer_norms.npz is copied only when smaller


def command(dataset: str, model: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The ordinary command line that trains one entry of the queue."""
    cmd = [sys.executable, "-m", "experiments.compare", "--study", args.study, "--datasets", dataset,
           "--models", model, "--seeds", str(seed), "--out", str(args.out), "--no-report"]
    for s in COMPUTE:
        cmd += ["--set", s]
    if args.raw_dir:
        cmd += ["--raw-dir", args.raw_dir]
    if args.no_progress:
        cmd.append("--no-progress")
    return cmd


def run_name(dataset: str, model: str, seed: int, args: argparse.Namespace) -> str:
    """The run folder's name the entry's command trains (``jaxres.config.run_name``; no JAX is started)."""
    from experiments import compare
    from jaxres import config

    cli = compare.build_parser().parse_args(command(dataset, model, seed, args)[3:])
    return config.run_name(compare.make_study(cli).runs()[0])


def _finished(path: Path) -> bool:
    try:
        r = json.loads(path.read_text())
        return bool(r["history"] and r["history"][-1]["epoch"] >= r["config"]["epochs"] or r.get("diverged"))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def finished_runs(out: Path) -> dict[str, Path]:
    """run name -> folder, for every run in ``out`` whose results.json says it trained to its last epoch."""
    return {path.parent.name: path.parent for path in sorted(out.glob("*/results.json")) if _finished(path)}


def keep(run_dir: Path, results: Path) -> list[Path]:
    """Copy a finished run's small files into ``results/<run>/``; the paths written."""
    dest = results / run_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in COPIED:
        src = run_dir / name
        if src.is_file() and src.stat().st_size <= MAX_COPIED_BYTES:
            shutil.copy2(src, dest / name)
            written.append(dest / name)
    return written


def report(results: Path) -> None:
    subprocess.run([sys.executable, "-m", "experiments.compare", "--report-only", str(results)], check=False)


def commit(results: Path, message: str) -> None:
    """Commit ``results`` alone in its repository (``git commit --only``: whatever else is staged stays staged)."""
    repo = subprocess.run(["git", "-C", str(results), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if repo.returncode:
        print(f"campaign: note: {results} is not in a git repository; not committed", file=sys.stderr)
        return
    subprocess.run(["git", "-C", str(results), "add", "--", "."], check=False)
    done = subprocess.run(["git", "-C", str(results), "commit", "-q", "-m", message, "--only", "--", "."],
                          capture_output=True, text=True)
    if done.returncode and "nothing" not in done.stdout + done.stderr:
        print(f"campaign: note: git commit failed ({(done.stderr or done.stdout).strip()}); the files are in "
              f"{results}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.campaign", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the study folder the runs train in (checkpoints: keep it "
                   "outside the repository)")
    p.add_argument("--results", required=True, help="where each finished run's small files and the report go "
                   "(a folder of the repository, e.g. results/seed_cpu)")
    p.add_argument("--raw-dir", help="folder with <dataset>/<original files> (default $JAXRES_RAW_DIR)")
    p.add_argument("--study", default=STUDY, help=f"the study preset whose runs are queued (default {STUDY})")
    p.add_argument("--limit", type=int, help="train only the first N entries of the queue")
    p.add_argument("--commit", action="store_true", help="git-commit the results folder after each finished run")
    p.add_argument("--dry-run", action="store_true", help="print the queue's commands, and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _keep_new(args: argparse.Namespace, results: Path, before: set[str]) -> None:
    """Keep every run that finished since ``before`` (or is not kept yet) in ``results``, rebuild the report,
    and commit it where asked."""
    new = {n: d for n, d in finished_runs(args.out).items() if n not in before or not (results / n).exists()}
    for name, run_dir in new.items():
        keep(run_dir, results)
        print(f"campaign: {name} finished; kept in {results / name}")
    if new:
        report(results)
        if args.commit:
            commit(results, f"results/{results.name}: " + ", ".join(sorted(new)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.out, results = Path(args.out), Path(args.results)
    queue = QUEUE[:args.limit] if args.limit is not None else QUEUE
    if args.dry_run:
        try:
            for entry in queue:
                print(" ".join(command(*entry, args)), flush=True)
        except BrokenPipeError:  # the reader stopped early (``| head``): what it read is the queue, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    results.mkdir(parents=True, exist_ok=True)
    child: list[subprocess.Popen] = []

    def forward(signum, _frame):  # the run saves the step under way and exits; the campaign then stops
        for c in child:
            c.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(s, forward)
    for i, entry in enumerate(queue):
        name = run_name(*entry, args)
        if _finished(results / name / "results.json") and not (args.out / name).is_dir():
            print(f"campaign: {name} is already kept in {results / name} (its run folder is not here); skipped")
            continue
        before = set(finished_runs(args.out))
        proc = subprocess.Popen(command(*entry, args))
        child[:] = [proc]
        status = proc.wait()
        child.clear()
        _keep_new(args, results, before)
        if status not in (0, 1):  # 1: the run diverged (kept, marked); anything else stops the campaign
            print(f"campaign: stopped at entry {i + 1} of {len(queue)} ({' '.join(map(str, entry))}), exit "
                  f"status {status}; run the same command to continue", file=sys.stderr)
            return status if status > 0 else 128 - status
    print(f"campaign: all {len(queue)} runs of the queue are done; report in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
