"""Test session setup: 4 simulated CPU devices (for pmap).

The flag is read when JAX's backend starts, so it is set here, before any test imports
jax. The CPU fast path (jaxres.cpu) is applied by `import jaxres` itself.
"""
import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
