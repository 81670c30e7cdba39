"""Run and study configuration, without JAX: frozen, typed sections and the named study presets; import from here.
Each part lives in one module of this package: ``values`` (``ConfigError``, value types, parsing), ``sections``
(``RunConfig`` and its parts), ``keys`` (dotted keys, dicts), ``env`` (the compute overrides from the environment),
``identity`` (checkpoint identity, run names, the keys that change no number), ``study`` (axes), ``presets``
(``STUDIES``) and ``files`` (study files). They import only ``jaxres.catalog`` and one another (tests/test_layout.py).

A *run* is one ``RunConfig``: everything that decides its numbers (data, model, optimizer,
schedule, epochs, seed). Everything downstream derives from that one object: the checkpoint
identity (``identity``), the run folder (``run_name``), ``results.json`` and the report's columns.

A *study* is a base ``RunConfig`` plus axes, lists of values for any key, expanded into runs by
``Study.runs``. ``STUDIES`` holds the named presets; the protocols ``seed``, ``quick`` and ``tiny``
are studies. Keys are dotted paths (``optimizer.lr``, ``data.batch_size``, ``seed``):
``Study.set`` overrides one for every run and ``Study.sweep`` makes it an axis, both from typed
values or from command-line strings. Every value is checked when a config is made, so bad input
is one ``ConfigError`` line before anything is written (a key's own value when it is set; checks
that involve several keys, such as a batch larger than the data, when the study is expanded). Define a study in Python::

    from jaxres import config
    study = config.get_study("quick").set("optimizer.name", "sgd").sweep("optimizer.lr", [0.1, 0.01])
    for run in study.runs(): print(config.run_name(run))
"""

from jaxres.config.env import COMPUTE_ENV, env_overrides, from_env, with_env
from jaxres.config.files import is_study_file, load_study_file, study_from
from jaxres.config.identity import (NAMED_OPTIMIZER_SETTINGS, NOT_IDENTITY, OPTIMIZER_SETTINGS, POOLED, differences,
                                  identity, run_name, with_defaults)
from jaxres.config.keys import flatten, from_dict, get, keys, replace, to_dict
from jaxres.config.presets import HE_DEPTHS, NORM_OPT_OPTIMIZERS, SEED_DATASETS, SEED_MODELS, STUDIES, get_study
from jaxres.config.sections import (CONV_BACKENDS, DECAY_ON, MAX_SEED, OPTIMIZERS, PARALLEL, PRECISIONS, SCHEDULES,
                                  ComputeConfig, DataConfig, ModelConfig, OptimizerConfig, RunConfig, ScheduleConfig)
from jaxres.config.study import Study
from jaxres.config.values import ConfigError, Section

__all__ = ["COMPUTE_ENV", "CONV_BACKENDS", "DECAY_ON", "HE_DEPTHS", "MAX_SEED", "NAMED_OPTIMIZER_SETTINGS",
           "NORM_OPT_OPTIMIZERS", "NOT_IDENTITY", "OPTIMIZERS", "OPTIMIZER_SETTINGS", "PARALLEL", "POOLED", "PRECISIONS",
           "SCHEDULES", "SEED_DATASETS", "SEED_MODELS", "STUDIES", "ComputeConfig", "ConfigError", "DataConfig",
           "ModelConfig", "OptimizerConfig", "RunConfig", "ScheduleConfig", "Section", "Study", "differences",
           "env_overrides", "flatten", "from_dict", "from_env", "get", "get_study", "identity", "is_study_file", "keys",
           "load_study_file", "replace", "run_name", "study_from", "to_dict", "with_defaults", "with_env"]
