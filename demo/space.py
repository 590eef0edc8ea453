"""``python -m demo.space --out build/space``: write a folder that is a ready Hugging Face Space for the demo.

Spaces installs ``requirements.txt`` before it copies the repository, so the folder carries everything itself: the
front matter (``sdk: gradio``, ``sdk_version``, ``app_file``, ``python_version``), a torch-free
``requirements.txt`` pinned by the project's lock (``requirements/lock.txt``), ``app.py``, the project's torch-free modules the app
imports, and the ONNX bundles (verified by their manifests' sha256 when the app loads them). The Space's licence is
the weights' (:func:`weights_licence`): GPL-2.0-or-later when a bundled model learned from the GPL Ding dictionary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from core.bundle import GRAPHS, load_manifest
from core.confidence import CONFIDENCE_FILE

from .handlers import find_bundles

ROOT = Path(__file__).resolve().parent.parent
LOCK_TOOL = ROOT / "requirements" / "lock.py"
REQUIREMENTS = ("gradio", "plotly", "onnxruntime", "tokenizers", "numpy", "tqdm", "sentencex")  # what the app imports, no torch
APP = '''"""Hugging Face Space entry point: the attention-mt demo on the bundles in models/."""

from demo.app import main

if __name__ == "__main__":
    main()
'''
GITATTRIBUTES = ("*.onnx filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
                 "*.png filter=lfs diff=lfs merge=lfs -text\n")


def imported_project_files() -> list[Path]:
    """The project's source files that ``demo.app`` imports, found by importing it in a fresh interpreter."""
    code = ("import sys, demo.app\n"
            "for name, module in sorted(sys.modules.items()):\n"
            "    if name.split('.')[0] in ('core', 'serve', 'demo') and getattr(module, '__file__', None):\n"
            "        print(module.__file__)\n")
    listed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [Path(line) for line in listed.splitlines()]


def weights_licence(bundle: Path) -> str:
    """The Hub licence id of a bundle's weights: "gpl-2.0" when its model folder's metrics.json names the GPL (the
    model was trained on the Ding dictionary, :mod:`core.ding`), else "mit", the project's own."""
    folder = bundle.resolve()
    metrics = folder.parent / "metrics.json"
    if folder.name == "onnx" and metrics.is_file():
        if str(json.loads(metrics.read_text(encoding="utf-8")).get("license", "")).startswith("GPL"):
            return "gpl-2.0"
    return "mit"


def locked_pins() -> dict[str, str]:
    """The Space's requirements: the project's lock (``requirements/lock.txt``) pins of what the app imports and of
    everything those require, so the Space installs the versions the project's tests ran with (name -> version)."""
    if not LOCK_TOOL.is_file():
        raise RuntimeError(f"{LOCK_TOOL} is missing: run python -m demo.space from the project's checkout")
    spec = importlib.util.spec_from_file_location("attention_mt_lock", LOCK_TOOL)
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pins = lock.read_lock(lock.LOCK.read_text(encoding="utf-8"))
    return {name: pins[name][0] for name in sorted(lock.closure(pins, set(REQUIREMENTS)))}


def space_readme(title: str, directions: Sequence[str], licence: str = "mit") -> str:
    gradio_version = locked_pins()["gradio"]
    python_version = ".".join(platform.python_version_tuple()[:2])
    data = "Multi30K image descriptions" + (
        " and the everyday sentences of the Ding German-English dictionary (GPL-2.0-or-later, hence the weights'"
        " licence)" if licence == "gpl-2.0" else "")
    return f"""---
title: {title}
emoji: 🔍
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
python_version: "{python_version}"
pinned: false
license: {licence}
short_description: Translate and watch every attention head of a Transformer
---

# {title}

A Transformer written from "Attention Is All You Need", trained on {data}, running on the CPU
with onnxruntime (no torch). Translate ({", ".join(directions)}), then inspect the encoder, decoder and
encoder-decoder attention of the translation beam search chose, for every layer and head.

Written by `python -m demo.space` from the attention-mt repository; run it locally with `pip install -r
requirements.txt && python app.py`.
"""


def write_space(out: str | Path, bundles: Sequence[str | Path] | None = None, *, title: str = "attention-mt",
                force: bool = False) -> Path:
    """Write the Space folder; refuses to replace an existing non-empty folder unless force."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    bundles = [Path(b) for b in (bundles or find_bundles(ROOT / "models"))]
    out.mkdir(parents=True, exist_ok=True)
    for source in imported_project_files():
        target = out / source.resolve().relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    directions = []
    for bundle in bundles:
        manifest = load_manifest(bundle)
        graphs = manifest["graphs"]
        weights = sorted({file for name in GRAPHS for file in graphs[name]["weights"]})  # the graphs' shared weights
        files = [*(graphs[name]["file"] for name in GRAPHS), *weights, manifest["tokenizer"], "config.json",
                 "manifest.json", *([CONFIDENCE_FILE] if CONFIDENCE_FILE in manifest["files"] else [])]  # calibration
        name = bundle.resolve().parent.name if bundle.resolve().name == "onnx" else bundle.resolve().name
        target = out / "models" / name / "onnx"
        target.mkdir(parents=True)
        for file in files:
            shutil.copy2(bundle / file, target / file)
        languages = manifest.get("languages") or {}
        directions.append(f"{languages.get('source', '?')}→{languages.get('target', '?')}")
    (out / "app.py").write_text(APP, encoding="utf-8")
    (out / "requirements.txt").write_text(
        "".join(f"{package}=={version}\n" for package, version in locked_pins().items()), encoding="utf-8")
    licence = "gpl-2.0" if any(weights_licence(bundle) == "gpl-2.0" for bundle in bundles) else "mit"
    (out / "README.md").write_text(space_readme(title, directions, licence), encoding="utf-8")
    (out / ".gitattributes").write_text(GITATTRIBUTES, encoding="utf-8")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo.space", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder to write (the Space repository's contents)")
    parser.add_argument("--model", action="append", dest="models", metavar="BUNDLE",
                        help="an exported bundle folder; repeat for more (default: every models/*/onnx)")
    parser.add_argument("--title", default="attention-mt",
                        help="the Space's title, on its page and its card (default attention-mt)")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        out = write_space(args.out, args.models, title=args.title, force=args.force)
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"python -m demo.space: {error}") from None
    files = sorted(p for p in out.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    print(json.dumps({"out": str(out), "files": len(files), "megabytes": round(size / 1e6, 1)}))


if __name__ == "__main__":
    main()
