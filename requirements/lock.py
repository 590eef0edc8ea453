"""The project's locked Python dependencies: ``requirements/lock.txt``, made by pip-tools from ``pyproject.toml``.

    python requirements/lock.py refresh             # add what pyproject.toml added, drop what it dropped; says what changed
    python requirements/lock.py refresh --upgrade   # every package to the newest version pyproject.toml's ranges allow
    python requirements/lock.py check               # this environment's packages against the lock (exit 1 on a difference)
    python requirements/lock.py newest [PYTEST ARGS] # a venv with the newest versions the ranges allow, then pytest

``pyproject.toml`` keeps the compatible ranges for people who install the package into an environment of their own;
the lock pins one tested version of everything that every extra installs (``dev`` names them all), for Python 3.11 on
Linux x86_64 with the CPU build of torch. Install from it as a constraints file, with any extras:

    pip install -c requirements/lock.txt torch && pip install -c requirements/lock.txt -e ".[dev]"

Only the standard library is used here, so the script runs from any Python 3.10+.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PINS = ROOT / "requirements" / "pins.txt"
PROJECT = "attention-mt"
PIP_TOOLS = "pip-tools==7.7.0"
TOOLS_VENV = ROOT / "build" / "lock-tools"
NEWEST_VENV = ROOT / "build" / "newest-venv"
# Installed by venv itself at the version of the Python that made it: not checked.
BOOTSTRAP = {"pip", "setuptools", "wheel"}
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them ("Jinja2" == "jinja2", "gradio_client" == "gradio-client")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """The lock's pins: canonical name -> (version, the names of what requires it, from pip-compile's "# via")."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in text.splitlines():
        match = PIN_LINE.match(line)
        if match:
            name = canonical(match.group(1))
            pins[name] = (match.group(2), [])
        elif name and line.startswith("    # via"):
            parents = line.removeprefix("    # via").strip()
            if parents:
                pins[name][1].append(parents)
        elif name and line.startswith("    #   "):
            pins[name][1].append(line.removeprefix("    #   ").strip())
        elif not line.startswith(" "):
            name = None
    return {name: (version, [canonical(parent.split(" ")[0]) for parent in parents])
            for name, (version, parents) in pins.items()}


def closure(pins: dict[str, tuple[str, list[str]]], roots: set[str]) -> set[str]:
    """The locked packages that installing roots brings in: roots and, transitively, what they require."""
    roots = {canonical(root) for root in roots}
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for name, (_, parents) in pins.items():
            if name not in found and any(parent in found for parent in parents):
                found.add(name)
                grew = True
    return found & set(pins)


def differences(pins: dict[str, tuple[str, list[str]]], installed: dict[str, str]) -> list[str]:
    """How installed (canonical name -> version) differs from the lock: a package at another version, or one the lock
    does not name. Packages the lock names but the environment lacks are fine (an environment with fewer extras)."""
    problems = []
    for name, version in sorted(installed.items()):
        if name == PROJECT or name in BOOTSTRAP:
            continue
        if name not in pins:
            problems.append(f"{name}=={version} is installed but not in the lock")
        elif pins[name][0] != version:
            problems.append(f"{name}=={version} is installed, the lock says {pins[name][0]}")
    return problems


def installed_here() -> dict[str, str]:
    return {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def python_of(directory: Path) -> Path:
    return directory / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def fresh_venv(directory: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    return python_of(directory)


def pip_compile(upgrade: bool) -> str:
    """Run pip-compile (in a venv of its own under build/) and return the lock's new text.

    pip-compile runs pip's own resolver, so it sees the same package sources as the pip that installs from the lock
    (the CPU torch wheel included); pyproject.toml's ``dev`` extra names every other extra."""
    python = python_of(TOOLS_VENV)
    if not python.is_file() or subprocess.run([str(python), "-m", "piptools", "--version"],
                                              capture_output=True).returncode:
        fresh_venv(TOOLS_VENV)
        run([str(python), "-m", "pip", "install", "--quiet", PIP_TOOLS])
    output = TOOLS_VENV / "lock.txt"
    if LOCK.is_file() and not upgrade:
        output.write_text(LOCK.read_text(encoding="utf-8"), encoding="utf-8")  # pip-compile keeps its pins
    elif output.exists():
        output.unlink()
    run([str(python), "-m", "piptools", "compile", "pyproject.toml", "--extra", "dev", "--quiet",
         "--strip-extras", "--allow-unsafe", "--no-emit-index-url", "--no-emit-find-links",
         "--constraint", str(PINS.relative_to(ROOT)), "--output-file", str(output),
         *(["--upgrade"] if upgrade else [])], cwd=ROOT)
    return without_project(output.read_text(encoding="utf-8"))


def without_project(text: str) -> str:
    """The lock text without the project's own entry (pip-compile lists "attention-mt @ file:///its/path" for the
    self-referencing extras) and with the command in the header as one types it here."""
    lines, skipping = [], False
    for line in text.splitlines():
        if line.startswith(f"{PROJECT} @ "):
            skipping = True
            continue
        if skipping and line.startswith("    #"):
            continue
        skipping = False
        if line.startswith("#    pip-compile "):
            line = "#    python requirements/lock.py refresh (pip-compile, see requirements/lock.py)"
        lines.append(line)
    return "\n".join(lines) + "\n"


def changes(old: dict[str, tuple[str, list[str]]], new: dict[str, tuple[str, list[str]]]) -> list[str]:
    """What a refresh changed, one line a package."""
    lines = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, (None,))[0], new.get(name, (None,))[0]
        if before is None:
            lines.append(f"+ {name}=={after}")
        elif after is None:
            lines.append(f"- {name}=={before}")
        elif before != after:
            lines.append(f"~ {name} {before} -> {after}")
    return lines


def refresh(upgrade: bool) -> None:
    old = read_lock(LOCK.read_text(encoding="utf-8")) if LOCK.is_file() else {}
    text = pip_compile(upgrade)
    LOCK.write_text(text, encoding="utf-8")
    changed = changes(old, read_lock(text))
    print("\n".join(changed) if changed else "the lock is unchanged")
    print(f"{len(read_lock(text))} packages in {LOCK.relative_to(ROOT)}")


def check() -> int:
    problems = differences(read_lock(LOCK.read_text(encoding="utf-8")), installed_here())
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} differences from {LOCK.relative_to(ROOT)}; "
              "install with -c requirements/lock.txt, or refresh the lock (python requirements/lock.py refresh)")
        return 1
    print(f"every installed package is at its locked version ({LOCK.relative_to(ROOT)})")
    return 0


def newest(pytest_args: list[str]) -> int:
    """Install the newest versions pyproject.toml's ranges allow (requirements/pins.txt still applies) into a fresh
    venv, print where they differ from the lock, and run pytest there."""
    python = fresh_venv(NEWEST_VENV)
    run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([str(python), "-m", "pip", "install", "--quiet", "-c", str(PINS), "torch"])
    run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "--upgrade-strategy", "eager",
         "-c", str(PINS), "-e", ".[dev]"], cwd=ROOT)
    listed = subprocess.run([str(python), str(Path(__file__)), "check"], capture_output=True, text=True)
    print("the newest versions against the lock:", listed.stdout.strip(), sep="\n")
    env = {**os.environ, "VIRTUAL_ENV": str(NEWEST_VENV)}
    env["PATH"] = str(python.parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([str(python), "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python requirements/lock.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    refresh_parser = commands.add_parser("refresh", help="re-resolve the lock from pyproject.toml and say what changed")
    refresh_parser.add_argument("--upgrade", action="store_true",
                                help="move every package to the newest version allowed (default: keep existing pins)")
    commands.add_parser("check", help="compare this environment's packages with the lock")
    commands.add_parser("newest", help="test with the newest versions the ranges allow (not CI); "
                        "the arguments that follow go to pytest")
    args, pytest_args = parser.parse_known_args(argv)
    if pytest_args and args.command != "newest":
        parser.error(f"unrecognized arguments: {' '.join(pytest_args)}")
    if args.command == "refresh":
        refresh(args.upgrade)
        return 0
    if args.command == "check":
        return check()
    return newest(pytest_args)


if __name__ == "__main__":
    sys.exit(main())
