"""A study: a base ``RunConfig`` plus axes (``Study.set``, ``Study.sweep``, tied axes), expanded into checked,
distinct runs by ``Study.runs``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from jaxres import catalog
from jaxres.config.env import env_overrides, from_env
from jaxres.config.identity import run_name
from jaxres.config.keys import check_key, get, set_nested
from jaxres.config.sections import RunConfig
from jaxres.config.values import ConfigError

@dataclasses.dataclass(frozen=True)
class Study:
    """A base config plus axes; ``runs()`` is every combination of the axes' values.

    An axis is ``(key, values)``, or ``((key1, key2, ...), rows)`` for keys that move together (a
    *tied* axis: each row sets every key, e.g. each optimizer with its own learning rate).
    ``epochs_by_dataset`` gives each dataset its epoch count (a protocol's choice; a dataset it does not list
    trains for its own, ``jaxres.catalog.Dataset.epochs``); setting or sweeping ``epochs`` replaces it for
    every dataset.
    """

    name: str
    description: str
    base: RunConfig = RunConfig()
    axes: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
    epochs_by_dataset: tuple[tuple[str, int], ...] | None = None
    # where a study file defined it ({"file", "sha256", "arg"}, ``jaxres.config.load_study_file``); each run records it
    source: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)

    def _without(self, key: str) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
        """The axes with ``key`` taken out (from a tied axis too: its other keys stay tied)."""
        out = []
        for k, values in self.axes:
            if isinstance(k, tuple) and key in k:
                i = k.index(key)
                k = k[:i] + k[i + 1:]
                values = tuple(dict.fromkeys(v[:i] + v[i + 1:] for v in values))
                if len(k) == 1:
                    k, values = k[0], tuple(dict.fromkeys(v[0] for v in values))
            if k != key:
                out.append((k, values))
        return tuple(out)

    def set(self, key: str, value: Any) -> Study:
        """Every run gets ``key`` = ``value`` (an axis on that key is dropped)."""
        check_key(key)
        epochs = None if key == "epochs" else self.epochs_by_dataset
        return dataclasses.replace(self, base=set_nested(self.base, key, value), axes=self._without(key),
                                   epochs_by_dataset=epochs)

    def sweep(self, key: str, values: Sequence[Any] | str) -> Study:
        """``key`` becomes an axis over ``values`` (a list, or a command-line string "a,b,c" / "[a, b]").
        A comma-separated ``key`` ("optimizer.name,optimizer.lr") makes a tied axis: ``values`` are rows,
        one value per key (a list of lists, or the string "adam,0.001;sgd,0.1" or JSON)."""
        if "," in key:
            return self.sweep_tied(tuple(k.strip() for k in key.split(",")), values)
        check_key(key)
        if isinstance(values, str):
            text = values.strip()
            values = json.loads(text) if text.startswith("[") and _is_json(text) else text.split(",")
            values = [v.strip() if isinstance(v, str) else v for v in values]
        # each value parsed and checked now, so a bad one is one line before anything runs
        values = tuple(dict.fromkeys(_freeze(get(set_nested(self.base, key, v), key)) for v in values))
        if not values:
            raise ConfigError(f"no values given for {key}")
        epochs = None if key == "epochs" else self.epochs_by_dataset
        return dataclasses.replace(self, axes=self._without(key) + ((key, values),), epochs_by_dataset=epochs)

    def sweep_tied(self, keys_: Sequence[str], rows: Sequence[Sequence[Any]] | str) -> Study:
        """One axis over several keys that move together: each row gives one value per key."""
        keys_ = tuple(keys_)
        if len(set(keys_)) != len(keys_) or len(keys_) < 2:
            raise ConfigError(f"a tied axis needs two or more different keys, got {', '.join(keys_)}")
        for k in keys_:
            check_key(k)
        if isinstance(rows, str):
            text = rows.strip()
            rows = (json.loads(text) if text.startswith("[") and _is_json(text)
                    else [[v.strip() for v in row.split(",")] for row in text.split(";") if row.strip()])
        typed = []
        for row in rows:
            if len(row) != len(keys_):
                raise ConfigError(f"the row {list(row)!r} has {len(row)} values for the {len(keys_)} keys "
                                  f"{', '.join(keys_)}")
            typed.append(tuple(_freeze(get(set_nested(self.base, k, v), k)) for k, v in zip(keys_, row)))
        rows = tuple(dict.fromkeys(typed))
        if not rows:
            raise ConfigError(f"no rows given for {', '.join(keys_)}")
        study = self
        for k in keys_:
            study = dataclasses.replace(study, axes=study._without(k))
        epochs = None if "epochs" in keys_ else self.epochs_by_dataset
        return dataclasses.replace(study, axes=study.axes + ((keys_, rows),), epochs_by_dataset=epochs)

    def with_env(self, environ: Mapping[str, str] | None = None) -> Study:
        """Every run gets the environment's overrides of the compute settings (``from_env``)."""
        compute, study = from_env(self.base.compute, environ), self
        for key in env_overrides(environ):
            study = study.set(key, get(compute, key.partition(".")[2]))
        return study

    def axis_keys(self) -> dict[str, Any]:
        """Every key that an axis moves -> its values (a tied key's values in row order)."""
        out: dict[str, Any] = {}
        for k, values in self.axes:
            if isinstance(k, tuple):
                out.update({key: [row[i] for row in values] for i, key in enumerate(k)})
            else:
                out[k] = list(values)
        return out

    def runs(self) -> list[RunConfig]:
        """Every run of the study, checked, without duplicates, in axis order."""
        keys_, values = [k for k, _ in self.axes], [v for _, v in self.axes]
        out: dict[str, RunConfig] = {}
        for combo in itertools.product(*values):
            cfg = self.base
            for k, v in zip(keys_, combo):
                for key, value in (zip(k, v) if isinstance(k, tuple) else ((k, v),)):
                    cfg = set_nested(cfg, key, value)
            if self.epochs_by_dataset is not None:  # else the dataset's own (jaxres.catalog.Dataset.epochs)
                own = catalog.DATASETS[cfg.data.name].epochs if cfg.data.name in catalog.DATASETS else cfg.epochs
                epochs = dict(self.epochs_by_dataset).get(cfg.data.name, own)
                cfg = set_nested(cfg, "epochs", epochs)
            out.setdefault(run_name(cfg), cfg.check())
        return list(out.values())


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
