"""Install packages into the running Python's environment with uv where it can be had, else with pip.

    .venv/bin/python tools/install.py -e '.[dev]'        (what `make install` runs)

uv unpacks and byte-compiles in parallel: from a fresh clone on 2 cores, `make install .venv/.reference`
(jaxres[dev] and PyTorch) took 75 s with uv (from an empty uv cache) and 122 s with pip, within the same hour.
uv does not read pip's configuration, so the package sources pip is configured with (its configuration files
and PIP_* variables: index, extra indexes, find-links, constraints) are passed to uv, and uv, like pip, takes
the best version from all of them. Where uv cannot be installed or fails, pip installs the same arguments,
and this says so in one line.
"""
import ast
import subprocess
import sys

OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
           "constraint": "--constraint", "no-index": "--no-index"}  # pip's key: uv's option


def pip_sources(listed: str | None = None) -> list[str]:
    """uv's options for the sources pip is configured with, from ``pip config list`` (or ``listed``, its output):
    an environment variable beats the [install] section, which beats [global], as in pip."""
    if listed is None:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values: dict[tuple[str, str], str] = {}
    for line in listed.splitlines():
        name, sep, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if sep and key in OPTIONS:
            values[section, key] = ast.literal_eval(value)
    args = []
    for key, option in OPTIONS.items():
        value = next((values[s, key] for s in (":env:", "install", "global") if (s, key) in values), None)
        if value is None:
            continue
        if key == "no-index":  # a switch
            args += [option] if value.lower() in ("1", "true", "yes", "on") else []
        else:
            args += [a for v in value.split() for a in (option, v)]
    return args


def uv() -> list[str] | None:
    """The command that runs uv, installing it into this environment first where needed; None if it cannot be had."""
    have = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode == 0
    if not have and subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"],
                                   capture_output=True).returncode != 0:
        return None
    return [sys.executable, "-m", "uv"]


def main(args: list[str]) -> int:
    runner = uv()
    if runner is not None:
        done = subprocess.run([*runner, "pip", "install", "-q", "--python", sys.executable, "--compile-bytecode",
                               "--index-strategy", "unsafe-best-match", *pip_sources(), *args])
        if done.returncode == 0:
            return 0
        print("note: uv could not install this; installing with pip", file=sys.stderr)
    else:
        print("note: uv could not be installed; installing with pip (slower)", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
