"""Test session setup: 4 simulated CPU devices (for pmap) and the fast CPU convolution path.

Both flags are read when JAX's backend starts, so they are set here, before any test
imports jax.
"""
import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
if "xla_cpu_experimental_ynn_fusion_type" not in _flags:
    _flags += " --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
