"""An environment whose oneDNN extension is built against the current oneDNN package (``make onednn-current``).

    python3 -m venv .venv-onednn-current && .venv-onednn-current/bin/python tools/onednn_current.py

The current oneDNN on the package index (``onednn`` / ``onednn-devel`` 2026.1.0: oneDNN 3.13) is a SYCL
build with TBB threads. It brings Intel's SYCL, OpenCL and compiler runtimes (about 600 MB of downloads,
2 GB installed), and it cannot share an environment with oneDNN 3.2 (``onednn-cpu-gomp``): both install
lib/libdnnl.so.3. Its CPU engine needs a SYCL CPU device, which Unified Runtime finds through its OpenCL
adapter, and the 2026.2 runtime that pip resolves for it ships none ("SYCL cpu devices queried but not
found"). Run by this environment's Python, the script installs jaxres, swaps oneDNN 3.2 for the current
packages, copies that adapter from the 2026.1 runtime's wheel (``intel-cmplr-lib-ur==2026.1.2``) into the
environment's lib/, and builds the extension against oneDNN 3.13 as ``jaxres/_onednn_conv_current*.so``
beside 3.2's (``JAXRES_ONEDNN=current``, setup.py). ``jaxres.onednn.load`` says which one runs, and every run
header and results.json give its version. Why 3.2 stays the default: docs/benchmarks.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("onednn==2026.1.0", "onednn-devel==2026.1.0")
ADAPTER_WHEEL = "intel-cmplr-lib-ur==2026.1.2"  # the last runtime whose wheel has libur_adapter_opencl.so


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def _adapter(lib: Path) -> None:
    if (lib / "libur_adapter_opencl.so").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", ADAPTER_WHEEL, "-d", tmp])
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as z:
            for name in z.namelist():
                if "/lib/libur_adapter_opencl.so" in name:
                    (lib / Path(name).name).write_bytes(z.read(name))
                    print(f"copied {Path(name).name} into {lib}")


def main() -> int:
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        print("error: run this with a second environment's Python (make onednn-current), not .venv's",
              file=sys.stderr)
        return 2
    _run([sys.executable, str(ROOT / "tools" / "install.py"), "-e", ".[dev]"])
    _run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "onednn-cpu-gomp"])
    _run([sys.executable, str(ROOT / "tools" / "install.py"), *PACKAGES, "setuptools"])
    _adapter(Path(sys.prefix) / "lib")
    env = dict(os.environ, JAXRES_ONEDNN="current")  # jaxlib's FFI headers and oneDNN 3.13's are here now
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", "."], env=env)
    _run([sys.executable, "-c", "import jaxres; jaxres.setup(); from jaxres import onednn; print(onednn.load()[1])"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
