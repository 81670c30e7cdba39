"""Study files: ``--study path/to/file.py`` (or ``path.py:ARG``), whose ``get_study()`` (or ``get_study(ARG)``) returns
a jaxres ``Study``, as flax's examples take ``--config file.py`` and big_vision ``--config file.py:arg``.

The file is an ordinary Python module run once: it may import its neighbours (the folder it is in is put on
``sys.path``: a user's network beside their study), build a ``Study`` from a preset or from scratch, and
parse ``ARG`` as it likes. Each run of such a study records where it came from (``Study.source``: the file's
absolute path, the sha256 of its text, the argument) in ``results.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

from jaxres.config.presets import STUDIES, get_study
from jaxres.config.study import Study
from jaxres.config.values import ConfigError


def is_study_file(text: str) -> bool:
    """Whether ``--study`` names a file (``x.py`` or ``x.py:ARG``) rather than a preset."""
    return text.endswith(".py") or ".py:" in text


def study_from(text: str) -> Study:
    """The study ``--study`` names: a preset (``STUDIES``) or a study file; a ConfigError line otherwise."""
    text = text.strip()
    if is_study_file(text):
        return load_study_file(text)
    if text not in STUDIES:
        raise ConfigError(f"unknown study {text!r}; choose one of {', '.join(STUDIES)}, or name a study file "
                          "(path/to/file.py, or path.py:ARG) whose get_study() returns a jaxres Study")
    return get_study(text)


def load_study_file(text: str) -> Study:
    """Run the study file ``PATH.py[:ARG]`` and return its ``get_study([ARG])``, its source recorded."""
    path_text, arg = (text, None) if text.endswith(".py") else text.rsplit(".py:", 1)
    path = Path(path_text if path_text.endswith(".py") else path_text + ".py")
    if not path.is_file():
        raise ConfigError(f"--study {text}: there is no file {path}")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    module = _run(path, digest)
    get = getattr(module, "get_study", None)
    if not callable(get):
        raise ConfigError(f"{path} defines no get_study(); define get_study() (or get_study(arg), for {path}:ARG) "
                          "returning a jaxres Study")
    takes = [p for p in inspect.signature(get).parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if arg is not None and not takes:
        raise ConfigError(f"{path}: get_study() takes no argument, but {text} gives it {arg!r}")
    if arg is None and takes and takes[0].default is inspect.Parameter.empty:
        raise ConfigError(f"{path}: get_study({takes[0].name}) needs an argument: --study {path}:ARG")
    try:
        study = get(arg) if arg is not None else get()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's code: its error in one line, where it was raised
        raise ConfigError(f"{path}: get_study({'' if arg is None else repr(arg)}) raised {_where(e, path)}") from None
    if not isinstance(study, Study):
        raise ConfigError(f"{path}: get_study() returned {type(study).__name__}, not a jaxres Study "
                          "(jaxres.config.get_study('quick') is one to start from)")
    return dataclasses.replace(study, source={"file": str(path.resolve()), "sha256": digest, "arg": arg})


def _run(path: Path, digest: str):
    """The study file run as a module of its own (its folder on sys.path, so it imports its neighbours)."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"jaxres_study_{path.stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: {e.msg} (a syntax error in the study file)") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's code: its error in one line, where it was raised
        raise ConfigError(f"{path}: running it raised {_where(e, path)}") from None
    sys.modules[name] = module
    return module


def _where(e: BaseException, path: Path) -> str:
    """``TypeError: ... (line N)``: the error and the line of the study file it came from, where it did."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{type(e).__name__}: {e}" + (f" (line {lines[-1]})" if lines else "")
