"""The environment variables that override a run's compute settings, read in one place (``from_env``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from jaxres.config.keys import set_nested
from jaxres.config.sections import ComputeConfig, RunConfig
from jaxres.config.values import ConfigError

# compute key -> the environment variable that overrides it (read in one place: ``from_env``)
COMPUTE_ENV = {"precision": "JAXRES_PRECISION", "conv": "JAXRES_CONV", "fuse_add": "JAXRES_CONV_FUSE_ADD",
               "overlap_grads": "JAXRES_CONV_OVERLAP_GRADS", "onednn_norm": "JAXRES_ONEDNN_NORM",
               "fast_path": "JAXRES_CPU_FAST_PATH", "keep_memory": "JAXRES_KEEP_MEMORY"}


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"compute.<key>": text}`` for every COMPUTE_ENV variable that is set (and not empty)."""
    environ = os.environ if environ is None else environ
    return {f"compute.{k}": environ[v].strip() for k, v in COMPUTE_ENV.items() if environ.get(v, "").strip()}


def from_env(compute: ComputeConfig | None = None, environ: Mapping[str, str] | None = None) -> ComputeConfig:
    """``compute`` (default: the defaults) with the environment's overrides applied, each parsed like a
    ``--set`` value (``0``/``false``/``no``/``off``, ``1``/``true``/``yes``/``on``); a bad value is one
    ConfigError line naming the variable."""
    compute = compute or ComputeConfig()
    for key, text in env_overrides(environ).items():
        try:
            compute = set_nested(compute, key.partition(".")[2], text)
        except ConfigError as e:
            raise ConfigError(f"${COMPUTE_ENV[key.partition('.')[2]]}: {e}") from None
    return compute


def with_env(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the environment's overrides of its compute settings (``from_env``)."""
    compute = from_env(cfg.compute)
    return cfg if compute == cfg.compute else RunConfig(**{**dict(cfg), "compute": compute})
