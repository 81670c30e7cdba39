"""Test session setup: 4 simulated CPU devices (for pmap), and the datasets tests read.

The flag is read when JAX's backend starts, so it is set here, before any test imports
jax. The CPU settings of jaxres.setup() (XLA flag, kept memory) are applied here too, as a training
script would; the XLA flag reaches subprocesses through the environment.

``raw_dir``: tiny synthetic MNIST and CIFAR-10 files in the original formats (tests/synthetic.py),
so unit tests never skip. ``real_raw_dir``: the real files in ../shared/datasets (or
$JAXRES_RAW_DIR); tests of the real files skip where they are absent.
"""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for this session and its subprocesses: the many short
# training processes of the checkpoint and driver tests compile the same steps. Its key includes the
# computation, the XLA flags and the jax version, so it changes no result, only the time.
_cache = tempfile.mkdtemp(prefix="jaxres-tests-xla-cache-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jaxres  # noqa: E402

jaxres.setup()

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_RAW = Path(os.environ.get("JAXRES_RAW_DIR", ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory):
    import synthetic

    return synthetic.write_all(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def real_raw_dir():
    if not (REAL_RAW / "mnist").is_dir() or not (REAL_RAW / "cifar10").is_dir():
        pytest.skip(f"no real datasets at {REAL_RAW}")
    return REAL_RAW
