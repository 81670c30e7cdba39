"""tools/install.py: uv gets the package sources pip is configured with, and pip installs where uv cannot."""
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import install  # noqa: E402


def test_pip_sources_become_uv_options_with_pips_precedence():
    listed = "\n".join([
        ":env:.find-links='/opt/wheels'",
        "global.find-links='/elsewhere'",  # the environment variable wins, as in pip
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        "install.index-url='https://mirror/simple'",
        "global.index-url='https://ignored/simple'",
        "global.constraint='/etc/c.txt'",
        "global.cert='/etc/ssl/certs/ca.crt'",  # not a source: uv reads the system's certificates itself
        "global.no-index='false'",
    ])
    assert install.pip_sources(listed) == [
        "--index-url", "https://mirror/simple", "--extra-index-url", "file:///a/simple",
        "--extra-index-url", "file:///b/simple", "--find-links", "/opt/wheels", "--constraint", "/etc/c.txt"]
    assert install.pip_sources(":env:.no-index='1'") == ["--no-index"]
    assert install.pip_sources("") == []


def test_pip_installs_the_same_arguments_where_uv_fails_or_cannot_be_had(monkeypatch, capsys):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return SimpleNamespace(returncode=1 if "uv" in cmd else 0, stdout="")

    monkeypatch.setattr(install.subprocess, "run", run)
    monkeypatch.setattr(install, "uv", lambda: None)
    assert install.main(["-e", ".[dev]"]) == 0
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", ".[dev]"]]
    assert capsys.readouterr().err == "note: uv could not be installed; installing with pip (slower)\n"

    calls.clear()
    monkeypatch.setattr(install, "uv", lambda: [sys.executable, "-m", "uv"])
    monkeypatch.setattr(install, "pip_sources", lambda: ["--find-links", "/w"])
    assert install.main(["torch==2.13.0"]) == 0
    assert calls[0][:4] == [sys.executable, "-m", "uv", "pip"] and calls[0][-3:] == ["--find-links", "/w", "torch==2.13.0"]
    assert calls[1] == [sys.executable, "-m", "pip", "install", "-q", "torch==2.13.0"]
    assert "uv could not install this; installing with pip" in capsys.readouterr().err
