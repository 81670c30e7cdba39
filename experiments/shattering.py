"""Shattered gradients (Balduzzi et al., ICML 2017): how fast a network's input gradient decorrelates along a
line through an image, at initialization, during and after training, for every run of a study folder.

    python -m experiments.shattering --runs /work/campaign/depth_full_cpu --raw-dir ../shared/datasets \\
        --results results/depth_full_cpu

For each of ``--images`` test images x0 (the first of the test split) and a random unit direction u (the same
for every network), the gradient of the loss with respect to the input, g(x), is taken at x0 and at
x0 + d * |x0| * u for the distances d in ``DISTANCES`` (fractions of the image's norm, 1e-6 to 1); the cosine
of g(x0) with each is written, one row per run, state, image and distance, to RESULTS/shattering.csv. A
smooth function keeps that cosine near 1 over a long distance; a shattered one, whose gradient is white noise,
loses it within a tiny one. The report (``--report-only RESULTS``) reads that file alone.

The states: "init" is the run's own initialization (its seed's init stream, as at its step 0, checked against the
per-layer parameter norms the run recorded at step 0) with the batch-norm statistics estimated over
``CALIBRATION_BATCHES`` training batches (as a network in training mode normalizes); "trained" is the run's newest
checkpoint (its last epoch), which needs the run folder's checkpoints; "epoch E" (``--epochs``) is the checkpoint of
epoch E where the run kept it (``experiments.compare --keep-epochs``). An unfinished run has its "init" and "epoch
E" states measured, so that a run that moves to another machine loses none. All evaluate the network in inference
mode, so the images along a line do not normalize one another. A (run, state) already in the file is not measured
again.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import numpy as np

from experiments.campaign import finished_runs, saved_steps

DISTANCES = tuple(float(d) for d in np.logspace(-6, 0, 25))  # 4 a decade, fractions of the image's norm
CALIBRATION_BATCHES = 50  # flax's batch-norm momentum 0.9: 0.9 ** 50 < 0.01 of the initial statistics is left
FILE = "shattering.csv"
COLUMNS = ("run", "model", "seed", "state", "image", "distance", "cosine")


class ProbeError(Exception):
    """Bad input: one line, exit status 2."""


def state_name(epoch: int, final: int | None) -> str:
    """The state column for a checkpoint of ``epoch`` of a run of ``final`` epochs (None: unfinished): "trained"
    for the last."""
    return "trained" if epoch == final else f"epoch {epoch}"


def _runs(folder: Path, models: set[str] | None) -> list[tuple[Path, dict, int | None]]:
    """(run folder, its config, its epochs) for every run in ``folder`` of ``models`` (None: all) but the diverged:
    a finished run's config from its results, an unfinished one's (epochs None) from its config.json."""
    import json

    from jaxres import results as results_lib

    finished, found = finished_runs(folder), []
    for run_dir in sorted(p.parent for p in folder.glob("*/config.json")):
        if run_dir.name in finished:
            r = results_lib.read(run_dir / "results.json")[0]
            if r.get("diverged"):
                continue
            cfg, final = r["config"], len(r["history"])
        else:
            try:
                cfg, final = json.loads((run_dir / "config.json").read_text()), None
            except ValueError:
                print(f"shattering: {run_dir.name}: its config.json is damaged; not measured")
                continue
        if models is None or cfg["model"]["name"] in models:
            found.append((run_dir, cfg, final))
    return found


def _states(run_dir: Path, cfg: dict, raw_dir: str | None, wanted: dict[str, int | None]):
    """The run's dataset and its states named in ``wanted`` (state -> epoch, None for "init"): the initialization
    with its batch-norm statistics calibrated, and the checkpoints of the epochs asked for. ``cfg``: the run's
    config, as its results or its config.json give it."""
    import jax

    import jaxres
    from jaxres import checkpoint, config, data, models, optim, train

    cfg = config.from_dict(cfg)
    jaxres.setup(cfg.compute)
    streams = train.Streams.from_seed(cfg.seed)
    ds = data.make_dataset(cfg.data, raw_dir=raw_dir, order_seed=streams.order_seed)
    model = models.from_config(cfg, ds.num_classes)
    state = train.create_train_state(model, streams.init, ds.shape, optim.make_optimizer(cfg, ds.steps_per_epoch))
    states = {}
    if "init" in wanted and (why := _not_step0(run_dir, state)) is not None:
        print(f"shattering: {run_dir.name}: {why}; its initialization is not measured")
    elif "init" in wanted:
        @jax.jit
        def calibrate(s, images):
            _, new = s.apply_fn({"params": s.params, "batch_stats": s.batch_stats}, images, train=True,
                                mutable=["batch_stats"])
            return s.replace(batch_stats=new["batch_stats"])

        init = state
        if state.batch_stats:  # as many epochs as it takes on a small training split
            batches = (b for epoch in itertools.count() for b in ds.train_batches(epoch, streams.augment))
            for _, batch in zip(range(CALIBRATION_BATCHES), batches):
                init = calibrate(init, batch["image"])
        states["init"] = init
    epochs = {name: e for name, e in wanted.items() if e is not None}
    if epochs:
        with checkpoint.Checkpointer(run_dir, config.identity(cfg), keep=10**6) as ckpt:
            for name, epoch in epochs.items():
                try:
                    states[name] = ckpt.restore_epoch(state, epoch)[0]
                except checkpoint.CheckpointError as e:
                    print(f"shattering: {run_dir.name}: {e}; its state {name!r} is not measured")
    return states, ds


def _not_step0(run_dir: Path, state) -> str | None:
    """Why ``state``'s parameters are not the run's at its step 0, by the per-layer parameter norms the run recorded
    then (its layer_norms.npz); None where they agree, or where the run recorded none (said in a line)."""
    from jaxres import results, train

    recorded = results.load_layer_norms(run_dir / results.LAYER_FILE)
    if recorded is None or 0 not in recorded[1]["steps"]:
        print(f"shattering: {run_dir.name}: no parameter norms of its step 0 recorded; its initialization is rebuilt "
              "from its seed unchecked")
        return None
    names, series = recorded
    at0 = series["param"][list(series["steps"]).index(0)]
    ours = np.asarray(train.per_layer_norms(state.params, names))
    worst = int(np.argmax(abs(ours - at0) / np.maximum(abs(at0), 1e-12)))
    if not np.allclose(ours, at0, rtol=1e-5, atol=1e-7):
        return (f"its rebuilt initialization is not its step 0 (layer {names[worst]}: parameter norm {ours[worst]:.6g} "
                f"rebuilt, {at0[worst]:.6g} recorded)")
    return None


def cosines(state, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """images x distances: the cosine of the loss's input gradient at each image with that at distance d along a
    random unit direction (one per image, from ``seed``), for d in ``DISTANCES``."""
    import jax
    import jax.numpy as jnp
    import optax

    @jax.jit
    def grads(x, y):
        def loss(x):
            v = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
            logits = state.apply_fn(v, x, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()  # examples independent
        return jax.grad(loss)(x)

    rng = np.random.default_rng(seed)
    d = np.array((0.0,) + DISTANCES)
    rows = []
    for x0, y in zip(images, labels):
        u = rng.normal(size=x0.shape)
        u /= np.linalg.norm(u)
        points = x0[None] + (d * np.linalg.norm(x0))[:, None, None, None] * u[None]
        g = np.array(grads(jnp.asarray(points, jnp.float32), jnp.full(len(d), y)), np.float64).reshape(len(d), -1)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
        rows.append(g[1:] @ g[0])
    return np.array(rows)


def _done(path: Path) -> set[tuple[str, str]]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {(row["run"], row["state"]) for row in csv.DictReader(f)}


def _append(path: Path, rows: list[tuple]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(COLUMNS)
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    from experiments.compare import epoch_list

    p = argparse.ArgumentParser(prog="python -m experiments.shattering", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="a study folder: every finished run in it is measured")
    p.add_argument("--results", help="where shattering.csv goes (default: --runs), e.g. results/<campaign>")
    p.add_argument("--raw-dir", help="folder with <dataset>/<original files> (default $JAXRES_RAW_DIR)")
    p.add_argument("--models", help="only these models, comma-separated (default: every finished run's)")
    p.add_argument("--images", type=int, default=16, help="test images, each with its own line (default 16)")
    p.add_argument("--epochs", type=epoch_list, default=(), metavar="E1,E2,...", help="also measure the checkpoints of "
                   "these epochs where the run kept them (experiments.compare --keep-epochs), as states \"epoch E\"")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except ProbeError as e:
        print(f"shattering: error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    runs, out = Path(args.runs), Path(args.results or args.runs)
    if not runs.is_dir():
        raise ProbeError(f"--runs {runs} is not a folder")
    if args.images < 1:
        raise ProbeError(f"--images {args.images}: give 1 or more")
    models = set(args.models.split(",")) if args.models else None
    runs_found = _runs(runs, models)
    if not runs_found:
        raise ProbeError(f"no run in {runs}" + (f" of {args.models}" if models else ""))
    out.mkdir(parents=True, exist_ok=True)
    done = _done(out / FILE)
    for run_dir, cfg, final in runs_found:
        name, model, seed = run_dir.name, cfg["model"]["name"], cfg["seed"]
        saved = saved_steps(run_dir / "checkpoints")
        wanted = {"init": None, **{state_name(e, final): e for e in saved if e in args.epochs or e == final}}
        wanted = {k: e for k, e in wanted.items() if (name, k) not in done}
        if final is not None and (name, "trained") not in done and (not saved or saved[-1] != final):
            print(f"shattering: {name}: " + (f"its newest checkpoint is of epoch {saved[-1]}, its results of epoch "
                                             f"{final}" if saved else f"no checkpoint of its last epoch in {run_dir}")
                  + "; its trained state is not measured")
        if not wanted:
            continue
        states, ds = _states(run_dir, cfg, args.raw_dir, wanted)
        test = next(iter(ds.eval_batches("test")))
        images, labels = np.asarray(test["image"])[:args.images], np.asarray(test["label"])[:args.images]
        for state_key, state in states.items():
            cos = cosines(state, images, labels)
            _append(out / FILE, [(name, model, seed, state_key, i, f"{d:.6g}", f"{c:.5f}")
                                 for i, row in enumerate(cos) for d, c in zip(DISTANCES, row)])
            print(f"shattering: {name} {state_key}: cosine at distance 1e-4 / 1e-2 of the image's norm "
                  f"{cos[:, 8].mean():.3f} / {cos[:, 16].mean():.3f} (mean over {len(cos)} images)", flush=True)
    print(f"shattering: {out / FILE}; the report: python -m experiments.compare --report-only {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
