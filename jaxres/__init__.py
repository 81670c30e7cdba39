"""jaxres: controlled comparisons of plain and residual convolutional networks in JAX/Flax.

Importing jaxres (or any of its modules) changes nothing process-wide. The one call that does is
``jaxres.setup()`` (on CPU: XLA's own convolutions routed away from YNNPACK, freed memory kept in the
process; ``jaxres.cpu``), made by ``jaxres.run`` and by ``python -m experiments.compare``; a script or
notebook that trains calls it first, before JAX runs anything. ``jaxres.run(cfg, workdir)`` trains one
``jaxres.config.RunConfig`` end to end (``jaxres.runner``).
"""
from __future__ import annotations

from typing import Any


def setup(compute: Any = None) -> dict[str, str]:
    """Apply jaxres's process-wide CPU settings once (see ``jaxres.runner.setup``); what was done, in words."""
    from jaxres import runner

    return runner.setup(compute)


def run(cfg: Any, workdir: Any, **kwargs: Any) -> dict[str, Any]:
    """Train one RunConfig in ``workdir`` and return its results (see ``jaxres.runner.run``)."""
    from jaxres import runner

    return runner.run(cfg, workdir, **kwargs)
