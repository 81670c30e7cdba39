"""Named campaigns: a study preset's runs as an ordered queue that lasts several sessions on a CPU.

    nice python -m experiments.campaign --campaign depth_full_cpu --raw-dir ../shared/datasets \\
        --out /work/campaign/depth_full_cpu --results results/depth_full_cpu [--commit]

A campaign (``CAMPAIGNS``) is a preset plus an order: each entry of its queue is one run of the preset, trained
by the ordinary command line (``python -m experiments.compare ... --no-report``) on one shared ``--out``, with
the compute settings fixed once for the whole campaign (runs with other settings would not pool in the
report). An interrupted campaign is resumed by the same command: finished runs are not trained again, the
interrupted one continues at its last save inside an epoch.

As soon as a run has finished, its small files (``config.json``, ``results.json``, ``layer_norms.npz``)
are copied to ``--results`` (a folder of the repository, so that they survive a change of machine) and the
report is rebuilt there (``--report-only``: summary, curves, claims, report.md, from those files alone);
``--commit`` also commits that folder (and nothing else) in its git repository. A campaign's probes run first, on
every finished run: measurements that need its checkpoints, which stay in ``--out`` on this machine
(``depth_full_cpu``: ``experiments.shattering``).

A run longer than a working session would never finish where the machine is not kept between sessions, so
``--park`` copies each unfinished run's newest saves (its last epoch checkpoint and the save inside the next
epoch, checked against their manifests) with its ``config.json`` and ``layer_norms.npz`` into
``--results``/parked/<run>/ (and commits them with ``--commit``), once the campaign's probes have measured what they
can of them (their kept epochs, which are not parked); the next start on a new machine puts them back
into ``--out`` before the run resumes, and a finished run's parked copy is removed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

Entry = tuple[str, str, int]  # dataset, model, seed


@dataclasses.dataclass(frozen=True)
class Campaign:
    """A study preset's runs in the order they are trained, and the compute settings fixed for all of them."""

    study: str
    queue: tuple[Entry, ...]
    compute: tuple[str, ...]  # --set KEY=VALUE for every run
    about: str
    # modules run (python -m M --runs OUT --results RESULTS [--raw-dir D] [--epochs E1,E2,...]) after each finished
    # run is kept, before the report: measurements that need the run's checkpoints, which stay on this machine alone
    probes: tuple[str, ...] = ()
    # epochs whose checkpoints every run keeps (experiments.compare --keep-epochs), for the probes (--epochs)
    keep_epochs: tuple[int, ...] = ()


# Fixed for every seed_cpu run (docs/benchmarks.md: the fastest validated float32 path on the CPUs these sessions
# get; bfloat16 would need AVX512_BF16 on every machine the campaign resumes on).
COMPUTE = ("compute.precision=float32", "compute.conv=onednn")
_HE = ("resnet20", "resnet56", "plain20", "plain56")
CAMPAIGNS: dict[str, Campaign] = {
    # issue 34: CIFAR-10 seed 0 of the seed's pair and the plain twin first, then the seeds that give the claims
    # their intervals, then MNIST's seeds (its seed 0 first: the earlier seed-0 rows ran other settings).
    "seed_cpu": Campaign("seed_cpu", (
        ("cifar10", "seed_cnn", 0), ("cifar10", "seed_resnet", 0), ("cifar10", "seed_plain_twin", 0),
        ("cifar10", "seed_cnn", 1), ("cifar10", "seed_resnet", 1), ("cifar10", "seed_cnn", 2),
        ("cifar10", "seed_resnet", 2), ("cifar10", "seed_plain_twin", 1), ("cifar10", "seed_plain_twin", 2),
        ("mnist", "seed_cnn", 0), ("mnist", "seed_resnet", 0), ("mnist", "seed_cnn", 1),
        ("mnist", "seed_resnet", 1), ("mnist", "seed_cnn", 2), ("mnist", "seed_resnet", 2)), COMPUTE,
        "the seed study at full data: 9 CIFAR-10 runs (30 epochs), then 6 MNIST runs (10 epochs)"),
    # issue 47: seed 0 of the four 20/56-layer networks (the first depth verdicts), then seeds 1 and 2 (their
    # intervals), then the seed's "deeper networks" at one seed. The preset fixes float32 and oneDNN itself.
    "depth_full_cpu": Campaign("depth_full_cpu", tuple(
        ("cifar10", m, s) for s in (0, 1, 2) for m in _HE) + (("cifar10", "resnet110", 0), ("cifar10", "plain110", 0)),
        (), "He et al.'s degradation experiment at full data, 30 epochs: resnet20, resnet56, plain20, plain56 at "
            "seeds 0, 1, 2, then resnet110 and plain110 at seed 0; each finished run's shattered gradients measured "
            "(experiments.shattering), at initialization, after epochs 1, 2, 4, 8, 16 and trained",
        probes=("experiments.shattering",), keep_epochs=(1, 2, 4, 8, 16)),
}
COPIED = ("config.json", "results.json", "layer_norms.npz")
MAX_COPIED_BYTES = 20 << 20  # layer_norms.npz is copied only when smaller
PARKED = "parked"  # --results/parked/<run>/: an unfinished run's newest saves, carried to the next machine


# run in a fresh interpreter (it loads JAX): prints what was loaded, or why not, exit status 1 where it failed
ONEDNN_PROBE = "from jaxres import onednn; ok, why = onednn.load(); print(why); raise SystemExit(0 if ok else 1)"


class CampaignError(Exception):
    """Bad arguments or a machine the campaign cannot run on: one line, exit status 2."""


def command(entry: Entry, args: argparse.Namespace) -> list[str]:
    """The ordinary command line that trains one entry of the queue."""
    dataset, model, seed = entry
    cmd = [sys.executable, "-m", "experiments.compare", "--study", args.study, "--datasets", dataset,
           "--models", model, "--seeds", str(seed), "--out", str(args.out), "--no-report"]
    for s in args.compute:
        cmd += ["--set", s]
    if args.raw_dir:
        cmd += ["--raw-dir", args.raw_dir]
    if args.no_progress:
        cmd.append("--no-progress")
    if keep := CAMPAIGNS[args.campaign].keep_epochs:
        cmd += ["--keep-epochs", ",".join(map(str, keep))]
    return cmd


def run_config(entry: Entry, args: argparse.Namespace):
    """The run configuration the entry's command trains (no JAX is started)."""
    from experiments import compare

    return compare.make_study(compare.build_parser().parse_args(command(entry, args)[3:])).runs()[0]


def run_name(entry: Entry, args: argparse.Namespace) -> str:
    """The run folder's name the entry's command trains (``jaxres.config.run_name``; no JAX is started)."""
    from jaxres import config

    return config.run_name(run_config(entry, args))


def _finished(path: Path) -> bool:
    from jaxres import results

    r, problem = results.read(path)
    return problem is None and bool(r["history"][-1]["epoch"] >= r["config"]["epochs"] or r.get("diverged")
                                    or r.get("stopped_early"))


def finished_runs(out: Path) -> dict[str, Path]:
    """run name -> folder, for every run in ``out`` whose results.json says it trained to its end."""
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


def saved_steps(folder: Path) -> list[int]:
    """The numbered save folders in an orbax checkpoint folder (epochs, or steps inside one), read from the
    names alone (no JAX), in order; [] if there is no folder."""
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def _newest(folder: Path) -> int | None:
    return max(saved_steps(folder), default=None)


def park(run_dir: Path, dest: Path) -> str | None:
    """Copy the newest saves of the unfinished run in ``run_dir`` into ``dest`` (replacing what was parked there):
    its newest epoch checkpoint, the save inside the next epoch if there is one, their manifests, ``config.json``
    and ``layer_norms.npz``; each copied checkpoint verified against its manifest. What was parked, or why nothing
    was (None with a reason printed)."""
    from jaxres import checkpoint

    epoch = _newest(run_dir / "checkpoints")
    if epoch is None or not (run_dir / "manifests" / f"{epoch}.json").is_file():
        return None  # not one epoch saved (with its manifest) yet: nothing worth carrying
    manifests = run_dir / "manifests"
    parts = [(run_dir / "checkpoints" / str(epoch), Path("checkpoints") / str(epoch)),
             (manifests / f"{epoch}.json", Path("manifests") / f"{epoch}.json"),
             (manifests / checkpoint.MANIFESTED, Path("manifests") / checkpoint.MANIFESTED)]
    step = _newest(run_dir / checkpoint.PARTIAL)
    if step is not None and (manifests / f"{checkpoint.PARTIAL}.json").is_file():
        parts += [(run_dir / checkpoint.PARTIAL / str(step), Path(checkpoint.PARTIAL) / str(step)),
                  (manifests / f"{checkpoint.PARTIAL}.json", Path("manifests") / f"{checkpoint.PARTIAL}.json")]
    parts += [(run_dir / n, Path(n)) for n in ("config.json", "layer_norms.npz")]
    tmp = dest.with_name(f".{dest.name}.parking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for src, rel in parts:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / rel)
        checks = checkpoint.Manifests(tmp)
        checks.verify(tmp / "checkpoints" / str(epoch), epoch)
        if (tmp / checkpoint.PARTIAL).is_dir():
            checks.verify(tmp / checkpoint.PARTIAL / str(step), None)
    except (OSError, ValueError) as e:  # a save replaced while it was copied: the next --park takes the new one
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"campaign: {run_dir.name}: not parked ({type(e).__name__}: {e}); park again", file=sys.stderr)
        return None
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    inside = f" and step {step}, inside epoch {epoch + 1}" if (dest / checkpoint.PARTIAL).is_dir() else ""  # global
    return f"epoch {epoch}{inside}"


def unpark(parked: Path, run_dir: Path) -> str | None:
    """Put a parked run's saves back into ``run_dir`` where they are newer than its own (a new machine, or an
    emptied --out): what was put back, or None."""
    from jaxres import checkpoint

    epoch, here = _newest(parked / "checkpoints"), _newest(run_dir / "checkpoints")
    if epoch is None or (here is not None and here >= epoch):
        return None
    shutil.rmtree(run_dir / checkpoint.PARTIAL, ignore_errors=True)  # a save inside an older epoch: superseded
    (run_dir / "manifests" / f"{checkpoint.PARTIAL}.json").unlink(missing_ok=True)
    shutil.copytree(parked, run_dir, dirs_exist_ok=True)
    return f"epoch {epoch}"


def _park_all(args: argparse.Namespace, results: Path, queue: list[Entry]) -> int:
    """--park: carry every unfinished run of the queue that has an epoch saved into ``results``/parked/, after the
    campaign's probes have measured what they can of it (its kept epochs: checkpoints that are not parked)."""
    finished, parked = finished_runs(args.out), []
    if any((args.out / (name := run_name(e, args))).is_dir() and name not in finished for e in queue):
        probe(args, results)
    for entry in queue:
        name = run_name(entry, args)
        if name in finished or not (args.out / name).is_dir():
            continue
        where = park(args.out / name, results / PARKED / name)
        if where:
            parked.append(name)
            print(f"campaign: {name} parked at {where} in {results / PARKED / name}")
    if parked and args.commit:
        commit(results, f"results/{results.name}: parked " + ", ".join(parked))
    if not parked:
        print("campaign: no unfinished run with an epoch saved; nothing parked")
    return 0


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
    p.add_argument("--campaign", default="seed_cpu", choices=list(CAMPAIGNS),
                   help="the named queue: " + "; ".join(f"{n}: {c.about}" for n, c in CAMPAIGNS.items()))
    p.add_argument("--out", required=True, help="the study folder the runs train in (checkpoints: keep it "
                   "outside the repository)")
    p.add_argument("--results", required=True, help="where each finished run's small files and the report go "
                   "(a folder of the repository, e.g. results/<campaign>)")
    p.add_argument("--raw-dir", help="folder with <dataset>/<original files> (default $JAXRES_RAW_DIR)")
    p.add_argument("--study", help="train the queue's entries from this study preset instead of the campaign's "
                   "own (tests use tiny)")
    p.add_argument("--limit", type=int, help="train only the first N entries of the queue (N >= 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each on its own CPU with one OpenMP "
                   "thread (docs/benchmarks.md: 2 finishes a pair of He et al.'s runs about 1.2x sooner than 1 on a "
                   "2-core machine); keep it the same when resuming: a run's last digits depend on its threads")
    p.add_argument("--commit", action="store_true", help="git-commit the results folder after each finished run")
    p.add_argument("--park", action="store_true", help="copy every unfinished run's newest saves into "
                   "RESULTS/parked/ (committed with --commit), so that a new machine resumes them; then exit. Run it "
                   "before a session ends; the campaign's next start puts them back")
    p.add_argument("--status", action="store_true", help="print each run of the queue: finished, the epoch it "
                   "has saved (here or parked), or not started, with the hours it still needs at the pace of the "
                   "finished runs and the wall time left at --jobs; then exit (reads files only)")
    p.add_argument("--dry-run", action="store_true", help="print the queue's commands, and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[Entry]]:
    """The parsed arguments, checked (CampaignError), and the queue they select."""
    args = _parser().parse_args(argv)
    from jaxres import config

    camp = CAMPAIGNS[args.campaign]
    args.study = args.study or camp.study
    args.compute = camp.compute
    try:
        config.get_study(args.study)
    except config.ConfigError as e:
        raise CampaignError(f"--study: {e}") from None
    if args.limit is not None and args.limit < 1:
        raise CampaignError(f"--limit {args.limit}: give the number of entries to train, 1 to {len(camp.queue)}")
    cpus = len(os.sched_getaffinity(0))
    if not 1 <= args.jobs <= cpus:
        raise CampaignError(f"--jobs {args.jobs}: give 1 to {cpus} (the CPUs this process may use)")
    args.out = Path(args.out)
    return args, list(camp.queue[:args.limit])


def _check_writable(results: Path) -> None:
    """The results folder exists (made here) and takes files: checked before any training, not after it."""
    if results.exists() and not results.is_dir():
        raise CampaignError(f"--results {results} is a file; name a folder (e.g. results/<campaign>)")
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".campaign-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CampaignError(f"--results {results} is not writable ({e.strerror or e}); fix its permissions or "
                            "name another folder") from None


def _check_backend(args: argparse.Namespace, results: Path) -> None:
    """Where the runs need oneDNN (compute.conv=onednn), it loads here: checked once, before the first entry."""
    if run_config(CAMPAIGNS[args.campaign].queue[0], args).compute.conv != "onednn":
        return
    probe = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True)
    if probe.returncode:
        why = ((probe.stdout + probe.stderr).strip().splitlines() or ["no reason given"])[-1]
        raise CampaignError(f"the campaign's runs use compute.conv=onednn, which is unavailable here ({why}); build "
                            "the extension (make install, with g++ and oneDNN), or train these runs with another "
                            f"backend into another --results folder than {results}, so that they do not pool")


def probe(args: argparse.Namespace, results: Path, cpu: int | None = None) -> None:
    """Run the campaign's probes on the runs finished in ``--out`` (each skips what it has measured), on ``cpu``
    with one OpenMP thread where given (a run may train on the other); a probe that fails is named, not fatal."""
    for module in CAMPAIGNS[args.campaign].probes:
        cmd = [sys.executable, "-m", module, "--runs", str(args.out), "--results", str(results)]
        cmd += ["--raw-dir", args.raw_dir] if args.raw_dir else []
        if keep := CAMPAIGNS[args.campaign].keep_epochs:
            cmd += ["--epochs", ",".join(map(str, keep))]
        pinned = dict(env=dict(os.environ, OMP_NUM_THREADS="1"),
                      preexec_fn=lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else {}
        done = subprocess.run(cmd, check=False, **pinned)
        if done.returncode:
            print(f"campaign: note: {module} failed (exit status {done.returncode}); run `{' '.join(cmd)}` again "
                  "while the run folders are here", file=sys.stderr)


def _keep_new(args: argparse.Namespace, results: Path, cpu: int | None = None) -> None:
    """Keep every run that finished in ``--out`` and is not kept yet, or kept from an older results.json, in
    ``results``; rebuild the report, and commit it where asked."""
    new = {}
    for name, run_dir in finished_runs(args.out).items():
        kept = results / name / "results.json"
        if not kept.is_file() or kept.read_bytes() != (run_dir / "results.json").read_bytes():
            new[name] = run_dir
    for name, run_dir in new.items():
        keep(run_dir, results)
        shutil.rmtree(results / PARKED / name, ignore_errors=True)  # carried no further: it is done
        print(f"campaign: {name} finished; kept in {results / name}")
    if new:
        probe(args, results, cpu)
        report(results)
        if args.commit:
            commit(results, f"results/{results.name}: " + ", ".join(sorted(new)))


def _epoch_times(runs: list[dict], under_way: dict[str, list[dict]], here: str
                 ) -> tuple[dict[str, tuple[float, dict, str]], list[str]]:
    """model -> (median wall time of an epoch, its model facts, whence in words): over the epochs of its runs,
    finished (``runs``, results.json) or under way (``under_way``: model -> the history rows saved in their newest
    checkpoints), that ran on ``here`` (a CPU's ``jaxres.cpu.kind()``; each history row names its machine) where
    there are any, else over all of them; and the machines those epochs ran on, in words. Rows saved before rows
    named their machine count as on another CPU (a resumed run's epochs may have run on several)."""
    import statistics

    from jaxres import catalog
    from jaxres import results as results_lib

    times: dict[str, list[tuple[str | None, float]]] = {}
    facts = {r["config"]["model"]["name"]: results_lib.model_facts(r) or {} for r in runs}
    machines = set()
    for model, history in [(r["config"]["model"]["name"], r["history"]) for r in runs] + [
            (m, h) for m, histories in under_way.items() for h in histories]:
        rows = [(h.get("machine"), h["epoch_time_s"]) for h in history if h.get("epoch_time_s")]
        times.setdefault(model, []).extend(rows)
        machines.update(m for m, _ in rows)
        if model not in facts:  # under way only: the catalog's facts (a name it lacks has none)
            try:
                facts[model] = catalog.model_facts(model)
            except ValueError:
                facts[model] = {}
    measured = {}
    for m, rows in times.items():
        same = [t for k, t in rows if k == here]
        if rows:
            measured[m] = (statistics.median(same or [t for _, t in rows]), facts[m],
                           "on this CPU" if same else "on other CPUs")
    return measured, sorted(m for m in machines if m) + (["machines not recorded (older rows)"] if None in machines
                                                        else [])


def _estimate(model: str, measured: dict[str, tuple[float, dict, str]]) -> tuple[float, str] | None:
    """Seconds an epoch of ``model`` is expected to take, and whence: its own runs' epochs, else those of the
    nearest depth of its family and kind scaled by depth (He et al.'s networks cost about the same per layer);
    None where nothing comparable has run an epoch."""
    from jaxres import catalog

    if model in measured:
        return measured[model][0], f"{model}'s runs, {measured[model][2]}"
    try:
        f = catalog.model_facts(model)
    except ValueError:
        return None
    near = [(abs(g["depth"] - f["depth"]), m, t, g["depth"], where) for m, (t, g, where) in measured.items()
            if f.get("depth") and g.get("depth") and (g.get("family"), g.get("kind")) == (f["family"], f["kind"])]
    if not near:
        return None
    _, ref, t, depth, where = min(near)
    return t * f["depth"] / depth, f"{ref}'s, {where}, scaled by depth {f['depth']}/{depth}"


def _saved_history(name: str, saved: int | None, out: Path, results: Path) -> list[dict]:
    """An unfinished run's history rows as its newest checkpoint saved them (its ``meta``, plain JSON: no orbax),
    here or parked; [] where none can be read."""
    import json

    for folder in (out / name, results / PARKED / name):
        try:
            history = json.loads((folder / "checkpoints" / str(saved) / "meta" / "metadata").read_text())["history"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(history, list):
            return [h for h in history if isinstance(h, dict)]
    return []


def _own_pace(history: list[dict], here: str) -> tuple[float, str] | None:
    """An unfinished run's own median epoch time over its saved epochs that ran on ``here``, and whence; None where
    it has none (rows before they named their machine, or none saved)."""
    import statistics

    times = [h["epoch_time_s"] for h in history if h.get("machine") == here and h.get("epoch_time_s")]
    if times:
        return statistics.median(times), f"its own {len(times)} epoch{'s' if len(times) != 1 else ''} on this CPU"
    return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def status(args: argparse.Namespace, results: Path, queue: list[Entry]) -> int:
    """--status: each entry of the queue finished, under way (its newest epoch saved, here or parked) or not
    started, with the time it still needs at the pace of the campaign's epochs so far, and the wall time left at
    --jobs runs at once in the queue's order. Reads files only: no JAX, nothing trained or changed."""
    from jaxres import config
    from jaxres import results as results_lib

    rows, runs, under_way = [], [], {}
    for i, entry in enumerate(queue, 1):
        cfg = run_config(entry, args)
        name = config.run_name(cfg)
        done = next((r for path in (args.out / name / "results.json", results / name / "results.json")
                     if _finished(path) and (r := results_lib.read(path)[0])), None)
        saved = max((e for e in (_newest(args.out / name / "checkpoints"),
                                 _newest(results / PARKED / name / "checkpoints")) if e is not None), default=None)
        if saved is None and not done and (args.out / name).is_dir():
            saved = 0  # started here, no epoch saved yet
        history = _saved_history(name, saved, args.out, results) if saved and not done else []
        rows.append((i, entry, cfg.epochs, done, saved, name, history))
        runs += [done] if done else []
        if history:
            under_way.setdefault(entry[1], []).append(history)
    from jaxres import cpu
    here = cpu.kind()
    measured, cpus = _epoch_times(runs, under_way, here)
    print(f"campaign {args.campaign} (study {args.study}): {sum(1 for r in rows if r[3])} of {len(rows)} runs "
          f"finished, {sum(1 for r in rows if not r[3] and r[4] is not None)} under way, "
          f"{sum(1 for r in rows if not r[3] and r[4] is None)} not started")
    left, unknown = [], []  # seconds each unfinished entry still needs, in the queue's order (under way first)
    for i, (dataset, model, seed), epochs, done, saved, name, history in rows:
        what = f"{i:>3}  {dataset} {model} seed {seed}"
        if done:
            print(f"{what:<36} finished: {results_lib.how_it_ended(done)}, {_hours(done.get('wall_time_s') or 0)}")
            continue
        est = _own_pace(history, here) or _estimate(model, measured)
        state = ("not started" if saved is None else f"started, no epoch of {epochs} saved yet" if saved == 0
                 else f"epoch {saved} of {epochs} saved")
        if est is None:
            unknown.append(model)
            print(f"{what:<36} {state}; no estimate (no epoch of its family and kind yet)")
            continue
        need = (epochs - (saved or 0)) * est[0]
        left.append((saved is None, need))
        print(f"{what:<36} {state}; about {_hours(need)} to go at {est[0]:.0f} s an epoch ({est[1]})")
    if not left and not unknown:
        print("the queue is done")
        return 0
    slots = [0.0] * args.jobs
    for _, need in sorted(left, key=lambda x: x[0]):  # runs under way hold their slots first; stable: queue order
        slots[slots.index(min(slots))] += need
    print(f"left: about {_hours(sum(n for _, n in left))} of run time, {_hours(max(slots))} of wall time at "
          f"--jobs {args.jobs}" + (f", and {', '.join(unknown)} without an estimate" if unknown else ""))
    if cpus:
        print(f"epoch times: a run under way at its own median epoch on this CPU, {here}, else the median over its "
              f"network's runs' epochs (finished or under way) on this CPU where they have any, else over all of "
              f"them; they ran on {'; '.join(cpus)}; at another --jobs they differ")
    return 0


def _dry_run(queue: list[Entry], args: argparse.Namespace) -> int:
    try:
        for entry in queue:
            print(" ".join(command(entry, args)), flush=True)
    except BrokenPipeError:  # the reader stopped early (``| head``): what it read is the queue, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args, queue = _arguments(argv)
        if args.dry_run:
            return _dry_run(queue, args)
        results = Path(args.results)
        if args.status:
            return status(args, results, queue)
        _check_writable(results)
        if args.park:
            return _park_all(args, results, queue)
        _check_backend(args, results)
    except CampaignError as e:
        print(f"campaign: error: {e}", file=sys.stderr)
        return 2
    return _train(queue, args, results)


def _start(entry: Entry, name: str, args: argparse.Namespace, slot: int) -> subprocess.Popen:
    """One entry's run. With ``--jobs`` above 1, pinned to its own CPU with one OpenMP thread, its output in
    ``OUT/logs/<run>.log`` (runs side by side would interleave their lines)."""
    if args.jobs == 1:
        return subprocess.Popen(command(entry, args))
    cpu = sorted(os.sched_getaffinity(0))[slot]
    log = args.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"campaign: training {name} on CPU {cpu}; its output goes to {log}", flush=True)
    with open(log, "ab") as f:
        return subprocess.Popen(command(entry, args), stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"),
                                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))


def _train(queue: list[Entry], args: argparse.Namespace, results: Path) -> int:
    """Train the queue's entries in order, ``--jobs`` at a time; each finished run is kept as soon as it is. A
    stop signal is passed to every run under way (each saves its step and exits), and no entry starts after it."""
    running: dict[subprocess.Popen, tuple[int, Entry, int]] = {}  # run -> (entry's index, entry, slot)
    stopping: list[int] = []

    def forward(signum, _frame):
        stopping.append(signum)
        for proc in running:
            proc.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(s, forward)
    pending, slots, failed = list(enumerate(queue)), list(range(args.jobs)), None
    while running or (pending and failed is None and not stopping):
        while pending and slots and failed is None and not stopping:
            i, entry = pending.pop(0)
            name = run_name(entry, args)
            if _finished(results / name / "results.json") and not (args.out / name).is_dir():
                print(f"campaign: {name} is already kept in {results / name} (its run folder is not here); skipped")
                shutil.rmtree(results / PARKED / name, ignore_errors=True)  # parked before it finished elsewhere
                continue
            if (results / PARKED / name).is_dir() and (back := unpark(results / PARKED / name, args.out / name)):
                print(f"campaign: {name}: its saves parked in {results / PARKED / name} put back ({back})")
            slot = slots.pop(0)
            running[_start(entry, name, args, slot)] = (i, entry, slot)
        done = [proc for proc in running if proc.poll() is not None] if running else []
        if running and not done:
            time.sleep(1.0)
            continue
        for proc in done:
            i, entry, slot = running.pop(proc)
            slots.append(slot)
            _keep_new(args, results, sorted(os.sched_getaffinity(0))[slot] if args.jobs > 1 else None)
            if proc.returncode not in (0, 1) and failed is None:  # 1: diverged (kept, marked); else stop
                failed = (i, entry, proc.returncode)
    if failed is not None or stopping:
        i, entry, status = failed or (None, None, 128 + stopping[0])
        where = f"at entry {i + 1} of {len(queue)} ({' '.join(map(str, entry))}), exit status {status}" if entry \
            else f"by signal {signal.Signals(stopping[0]).name}"
        print(f"campaign: stopped {where}; run the same command to continue", file=sys.stderr)
        return status if status > 0 else 128 - status
    print(f"campaign: all {len(queue)} runs of the queue are done; report in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
