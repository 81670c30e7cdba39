"""Builds jaxres's optional oneDNN extension; the project itself is described in pyproject.toml.

The extension (jaxres/_onednn/conv.cc, norm.cc) is XLA FFI glue around oneDNN. It compiles against the XLA
FFI headers that jaxlib ships and oneDNN's headers and library: by default oneDNN 3.2 with OpenMP threads
(onednn-devel-cpu-gomp, onednn-cpu-gomp, build requirements); with JAXRES_ONEDNN=current, the current
oneDNN packages (onednn-devel, onednn: oneDNN 3.13, a SYCL/TBB build), as jaxres._onednn_conv_current, so that
both builds can sit side by side in one source tree (``make onednn-current`` makes a second environment for it;
docs/benchmarks.md says why it is not the default). It is optional: without a C++
compiler, off x86-64 Linux, or if compiling fails, jaxres installs without it and uses XLA's convolutions
(``jaxres.onednn.load`` says why).
"""
import os
import sys
from importlib import metadata, util
from pathlib import Path

from setuptools import Extension, setup


def _locate(dist: str, suffix: str) -> Path | None:
    """The folder holding the file of the installed distribution ``dist`` whose path ends with ``suffix``."""
    try:
        for f in metadata.files(dist) or ():
            if str(f).endswith(suffix):
                return Path(f.locate()).resolve().parent
    except metadata.PackageNotFoundError:
        pass
    return None


def _extensions() -> list[Extension]:
    import platform

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return []
    jaxlib = util.find_spec("jaxlib")
    choice = os.environ.get("JAXRES_ONEDNN", "").strip() or "3.2"
    if choice not in ("3.2", "current"):
        print(f"jaxres: JAXRES_ONEDNN={choice!r} is neither 3.2 nor current; building against 3.2")
        choice = "3.2"
    dist, devel = ("onednn", "onednn-devel") if choice == "current" else ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")
    headers = _locate(devel, "oneapi/dnnl/dnnl.hpp")  # include/oneapi/dnnl/
    library = _locate(dist, "libdnnl.so.3") or _locate(devel, "libdnnl.so")
    if jaxlib is None or headers is None or library is None:
        print(f"jaxres: jaxlib or oneDNN ({dist}, {devel}) not found at build time; building without the oneDNN "
              "extension")
        return []
    if not (library / "libdnnl.so").exists():  # link by the versioned name when the bare one is absent
        link = [f"-l:{next(library.glob('libdnnl.so.3*')).name}"]
    else:
        link = ["-ldnnl"]
    return [Extension(
        "jaxres._onednn_conv" + ("_current" if choice == "current" else ""),
        ["jaxres/_onednn/conv.cc", "jaxres/_onednn/norm.cc"],
        include_dirs=[str(Path(jaxlib.origin).parent / "include"), str(headers.parent.parent)],
        library_dirs=[str(library)], extra_link_args=[*link, "-fopenmp"],
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden", "-fopenmp"],
        language="c++", optional=True)]


setup(ext_modules=_extensions())
