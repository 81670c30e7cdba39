"""The CPU fast path: route convolutions away from YNNPACK before JAX's backend starts.

jaxlib 0.10.2 sends every CPU convolution to YNNPACK, whose kernel-gradient convolution is
~20x slower than XLA's Eigen path (seconds per seed_cnn step instead of under one). The XLA
flag below turns that off. ``jaxres.setup()`` applies it (importing jaxres changes nothing), unless

* the user already set that flag in XLA_FLAGS (their choice is kept), or
* ``compute.fast_path`` is false (``JAXRES_CPU_FAST_PATH=0`` overrides it), or
* the installed jaxlib does not know the flag (an unknown XLA flag aborts the process, so
  the flag's name is looked up in jaxlib's library first; nothing is set if it is absent).

XLA reads XLA_FLAGS once, when the backend starts: importing jaxres after JAX has already
run a computation leaves the flag without effect (``fast_path_status`` says so).

``setup`` also keeps freed memory in the process (``keep_freed_memory``): XLA's CPU runtime
allocates each step's temporary buffer (210 MB for seed_cnn at batch 128) with glibc's malloc from
one of its worker threads, and glibc serves such a block with a fresh ``mmap`` and returns it with
``munmap`` at the end of the step, so every step page-faults through 210 MB of new, zeroed memory
(about a fifth of a seed_cnn step on this CPU; ``benchmarks/step_time.py`` measures it as the
``jaxres-unkept-memory`` variant). With
one malloc arena, no ``mmap`` for large blocks and no trimming, the block is reused and the step
faults nothing; the cost is that the process keeps its peak heap (about 0.4 GB more for seed_cnn),
as the caching allocators of TensorFlow and PyTorch's GPU backend do. glibc's
``mallopt`` takes it at run time; threads that already allocated keep their arena, so this too
must happen before JAX starts its backend. ``compute.keep_memory=false`` (``JAXRES_KEEP_MEMORY=0``) turns
only this off.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import warnings
import sys
from importlib import metadata
from pathlib import Path

from jaxres.config.env import COMPUTE_ENV, from_env
from jaxres.config.sections import ComputeConfig
from jaxres.config.values import ConfigError

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
FLAG_NAME = FLAG.split("=")[0].lstrip("-")
SWITCH = COMPUTE_ENV["fast_path"]  # overrides compute.fast_path
MEMORY_SWITCH = COMPUTE_ENV["keep_memory"]  # overrides compute.keep_memory
# glibc's mallopt parameters (malloc.h): one arena, no mmap for large blocks, no trimming below 2 GiB
MALLOPT = {"M_ARENA_MAX": (-8, 1), "M_MMAP_MAX": (-4, 0), "M_TRIM_THRESHOLD": (-1, 2**31 - 1)}
VERIFIED_JAXLIB = ("0.10.2",)  # versions known to accept the flag
_status = "not applied"
_memory_status = "not applied"
_applied: ComputeConfig | None = None  # the settings setup() applied (once per process)


def _jaxlib_knows_flag() -> bool:
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if version in VERIFIED_JAXLIB:
        return True
    try:  # another version: look for the flag's name in jaxlib's shared libraries, without starting XLA
        import importlib.util

        spec = importlib.util.find_spec("jaxlib")
        root = Path(spec.origin).parent
        for lib in root.glob("*.so"):
            if lib.stat().st_size < 1 << 20:
                continue
            with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(FLAG_NAME.encode()) >= 0:
                    return True
    except (OSError, ValueError, AttributeError):
        pass
    return False


def keep_freed_memory(on: bool = True) -> str:
    """glibc: reuse freed blocks instead of unmapping them (see the module docstring); in words."""
    global _memory_status
    if not on:
        _memory_status = "off (compute.keep_memory=false)"
        return _memory_status
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _memory_status = "not applied: no glibc mallopt"
        return _memory_status
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    failed = [name for name, (param, value) in MALLOPT.items() if mallopt(param, value) != 1]
    _memory_status = f"not applied: mallopt refused {', '.join(failed)}" if failed else "applied"
    if not failed and _backend_started():
        _memory_status += " too late: the JAX backend had already started"
    return _memory_status


def memory_status() -> str:
    return _memory_status


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def apply_cpu_fast_path(on: bool = True) -> str:
    """Add the flag to XLA_FLAGS where it is safe and wanted; returns what was done, in words."""
    global _status
    flags = os.environ.get("XLA_FLAGS", "")
    if not on:
        _status = "off (compute.fast_path=false)"
    elif FLAG_NAME in flags:
        _status = "kept the user's XLA_FLAGS setting"
    elif not _jaxlib_knows_flag():
        _status = "not applied: this jaxlib does not know the flag"
    else:
        os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
        _status = "applied"
        if _backend_started():
            _status += " too late: the JAX backend had already started"
            warnings.warn("jaxres.setup() was called after JAX started its backend, so the CPU fast path "
                          f"({FLAG}) has no effect; call jaxres.setup() first", stacklevel=3)
    return _status


def fast_path_status() -> str:
    return _status


def host() -> dict[str, object]:
    """This machine's CPU, for results and benchmarks: its model name, logical CPUs, and which of the
    instruction sets that decide jaxres's CPU speed it has (AVX-512, its BF16 extension, AMX)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    # A hypervisor may name every EPYC "AMD EPYC": the family and model numbers still tell generations apart
    # (AMD family 25: Zen 3 and 4, 26: Zen 5) that share instruction sets but not speed (depth_full_cpu's epochs
    # took about 1.7x as long on another AVX-512 EPYC as on a family 26 one: docs/results.md).
    family = f"family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else None
    return {"model": info.get("model name", "unknown"), "family": family, "cpus": os.cpu_count(),
            "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]}


def name(host_info: dict[str, object] | None = None) -> str:
    """A CPU's model name with its family and model numbers where known: "AMD EPYC, family 26 model 2"."""
    h = host_info or host()
    return ", ".join(str(v) for v in (h.get("model", "unknown"), h.get("family")) if v)


def kind(host_info: dict[str, object] | None = None) -> str:
    """A CPU in words, as epoch times are grouped by: its ``name`` and the instruction sets of ``host()``,
    "AMD EPYC, family 26 model 2 (avx2, avx512f, avx512_bf16)"."""
    h = host_info or host()
    return f"{name(h)} ({', '.join(h.get('isa') or []) or 'no AVX2'})"


def machine(device_kind: str, platform: str) -> str:
    """What an epoch ran on, in words, for its history row: the CPU's ``kind()`` on the CPU backend, else the
    accelerator's device kind ("NVIDIA H200"). A run resumed on another machine has rows of both."""
    return kind() if platform == "cpu" else device_kind


def setup(compute: ComputeConfig | None = None) -> dict[str, str]:
    """Apply ``compute.fast_path`` and ``compute.keep_memory`` (default: the defaults with the environment's
    overrides, ``jaxres.config.env.from_env``) once per process, before JAX starts its backend; a later call changes
    nothing. What was done, in words (also in every ``results.json``). A later call that asks for another
    ``fast_path`` is one ConfigError line: the XLA flag cannot change once set (run it in a fresh process)."""
    global _applied
    compute = compute if compute is not None else from_env()
    if _applied is None:
        _applied = compute
        apply_cpu_fast_path(compute.fast_path)
        keep_freed_memory(compute.keep_memory)
    elif compute.fast_path != _applied.fast_path:
        raise ConfigError(f"compute.fast_path={str(compute.fast_path).lower()} differs from this process's "
                                 f"setup ({str(_applied.fast_path).lower()}), which cannot change once applied; run "
                                 "it in a fresh process (or its own study)")
    return {"cpu_fast_path": _status, "cpu_keep_memory": _memory_status}
