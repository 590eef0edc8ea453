"""Create the Python environment in which Optimum exports the ONNX files of ``python -m export.hf --onnx``.

    python -m export.optimum_env build/optimum-venv    # prints its python: pass it as --optimum-python

optimum-onnx pins transformers<4.58 while the project uses transformers 5, so Optimum gets its own virtual
environment with the pins of ``export/optimum-requirements.txt``; a ``.pth`` file puts this environment's packages
after its own, so torch, onnx and the rest are shared instead of downloaded again. Reuses a folder that works.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("optimum-requirements.txt")
SHARED_PATH_FILE = "zz_attention_mt_shared.pth"  # "zz": read last, so the environment's own packages come first


def python_of(directory: Path) -> Path:
    return directory / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def works(python: Path) -> bool:
    """Whether python imports Optimum's ONNX exporter."""
    done = subprocess.run([str(python), "-c", "import optimum.exporters.onnx"], capture_output=True)
    return python.is_file() and done.returncode == 0


def create(directory: str | Path) -> Path:
    """The python of a working Optimum environment at directory, created (pip install) when missing."""
    directory = Path(directory).resolve()
    python = python_of(directory)
    if python.is_file() and works(python):
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, SHARED_PATH_FILE).write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                    str(REQUIREMENTS)], check=True, stdout=sys.stderr)  # stdout carries only the path printed below
    if not works(python):
        raise RuntimeError(f"{python} cannot import optimum.exporters.onnx after installing {REQUIREMENTS}")
    return python


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.optimum_env", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="folder of the virtual environment (created or reused)")
    print(create(parser.parse_args(argv).directory))


if __name__ == "__main__":
    main()
