"""``python -m demo.static --out build/static``: the inspector as a static folder that translates in the browser.

The folder holds ``index.html`` and its ES modules (this package's ``index.html``, ``app.mjs``, ``views.mjs``,
``style.css``), serve/js's translator (``js/translator.mjs``, ``js/inspect.mjs``), the two packages it imports, copied
from serve/js/node_modules as ``npm ci`` installs them from serve/js's package-lock.json (``vendor/``: the
onnxruntime-web build for WebAssembly with its .wasm, and @huggingface/tokenizers), every bundle with exactly the
files its manifest lists (``models/<name>/onnx/``, checked against their sha256), ``inspector.json`` (the
directions, the demo's input limits, the runtime's size) and a ``README.md`` whose front matter (``sdk: static``)
makes the folder a Hugging Face Space as it is. Any static file server serves it (``python -m http.server``); no
request leaves for another host. See docs/static.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.bundle import graph_key, load_manifest, sha256_of, verify_checksums

from ..handlers import LANGUAGE_NAMES, LIMITS, find_bundles
from ..space import weights_licence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
JS = ROOT / "serve" / "js"
PAGE = ("index.html", "app.mjs", "views.mjs", "style.css")
TRANSLATOR = ("translator.mjs", "inspect.mjs", "sentences.mjs")
# What the page imports from each package (the import map in index.html names the module files).
VENDOR = {"onnxruntime-web": ("dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs",
                              "dist/ort-wasm-simd-threaded.wasm", "package.json", "README.md"),
          "@huggingface/tokenizers": ("dist/tokenizers.min.mjs", "package.json", "LICENSE", "README.md"),
          "sentencex-wasm": ("sentencex_wasm.js", "sentencex_wasm_bg.wasm", "package.json", "LICENSE", "README.md")}
RUNTIME_WASM = "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"
SEGMENTER_WASM = "vendor/sentencex-wasm/sentencex_wasm_bg.wasm"  # the sentence splitter (serve/js/sentences.mjs)
GITATTRIBUTES = "*.onnx filter=lfs diff=lfs merge=lfs -text\n*.wasm filter=lfs diff=lfs merge=lfs -text\n"


def installed_packages() -> Path:
    """serve/js/node_modules as its lockfile pins it: ``npm ci`` when a package is missing, then every vendored
    package's installed version checked against package-lock.json."""
    modules = JS / "node_modules"
    if not all((modules / name / "package.json").is_file() for name in VENDOR):
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to install serve/js's packages (Node 20 and npm)")
        subprocess.run(["npm", "ci", "--onnxruntime-node-install=skip", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=900, stdout=subprocess.DEVNULL)
    lock = json.loads((JS / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    for name in VENDOR:
        installed = json.loads((modules / name / "package.json").read_text(encoding="utf-8"))["version"]
        locked = lock[f"node_modules/{name}"]["version"]
        if installed != locked:
            raise RuntimeError(f"serve/js/node_modules has {name} {installed}, the lockfile {locked}: run npm ci "
                               "--onnxruntime-node-install=skip in serve/js")
    return modules


def direction_of(bundle: Path, manifest: dict, precision: str) -> dict:
    """How the page names and loads one bundle: with precision "int8", int8 search where the bundle has its int8
    graphs (float32 where it has none)."""
    languages = manifest.get("languages") or {}
    source, target = languages.get("source"), languages.get("target")
    name = bundle.resolve().parent.name if bundle.resolve().name == "onnx" else bundle.resolve().name
    label = (f"{LANGUAGE_NAMES.get(source, source)} → {LANGUAGE_NAMES.get(target, target)}" if source and target
             else name)
    int8 = all(graph_key(graph, "int8") in manifest["graphs"] for graph in ("encoder", "decoder_step"))
    return {"label": label, "bundle": f"models/{name}/onnx/", "source": source, "target": target,
            "precision": "int8" if int8 and precision == "int8" else "float32"}


def static_readme(title: str, directions: Sequence[dict], licence: str) -> str:
    pairs = ", ".join(direction["label"] for direction in directions)
    data = "Multi30K image descriptions" + (
        " and the everyday sentences of the Ding German-English dictionary (GPL-2.0-or-later, hence the weights'"
        " licence)" if licence == "gpl-2.0" else "")
    return f"""---
title: {title}
emoji: 🔍
colorFrom: blue
colorTo: indigo
sdk: static
app_file: index.html
license: {licence}
pinned: false
short_description: Every attention head of a translation, in your browser
---

# {title}: look inside a translation, in your browser

A Transformer written from "Attention Is All You Need", trained on {data}, translates ({pairs}) in
this page with onnxruntime-web: no server translates. The page shows every layer's and head's attention of all
three kinds (encoder self-attention, decoder self-attention, cross-attention) with a head grid and an alignment
view, the beam search as a tree you can walk with the keyboard, and what changes when you switch heads off.

Written by `python -m demo.static` from the attention-mt repository; any static file server serves the folder as it
is (`python -m http.server`). The first visit downloads the WebAssembly runtime and the model (the page says how
much); the browser keeps them for later visits.
"""


def write_static(out: str | Path, bundles: Sequence[str | Path] | None = None, *, title: str = "attention-mt",
                 precision: str = "float32", force: bool = False) -> Path:
    """Write the static inspector folder; refuses to replace an existing non-empty folder unless force.

    ``precision`` is the search graphs' the page downloads: "float32" (the default) gives Python's tokens in every
    browser; "int8" downloads 2.4 MB more per shipped direction (weights.int8.bin: the float32 weights.bin is needed
    for the attention graph anyway, docs/static.md)."""
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision must be float32 or int8, got {precision!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    bundles = [Path(b) for b in (bundles or find_bundles(ROOT / "models"))]
    manifests = []
    for bundle in bundles:
        manifest = load_manifest(bundle)
        verify_checksums(bundle, manifest)  # every listed file, before anything is copied
        manifests.append(manifest)
    modules = installed_packages()
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGE:
        shutil.copy2(HERE / name, out / name)
    (out / "js").mkdir()
    for name in TRANSLATOR:
        shutil.copy2(JS / name, out / "js" / name)
    for package, files in VENDOR.items():
        for file in files:
            target = out / "vendor" / package / Path(file).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(modules / package / file, target)
    directions = []
    for bundle, manifest in zip(bundles, manifests):
        direction = direction_of(bundle, manifest, precision)
        target = out / direction["bundle"]
        target.mkdir(parents=True)
        for file in [*manifest["files"], "manifest.json"]:  # exactly what the manifest lists, and itself
            shutil.copy2(bundle / file, target / file)
        directions.append(direction)
    labels = [direction["label"] for direction in directions]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two bundles translate the same direction: {labels}")
    settings = {"title": title, "directions": directions,
                "limits": {"maxChars": LIMITS.max_chars, "maxTokens": LIMITS.max_tokens, "maxBeams": LIMITS.max_beams},
                "runtime": {"wasm": RUNTIME_WASM, "bytes": (out / RUNTIME_WASM).stat().st_size,
                            "sha256": sha256_of(out / RUNTIME_WASM)},
                "segmenter": {"wasm": SEGMENTER_WASM, "bytes": (out / SEGMENTER_WASM).stat().st_size,
                              "sha256": sha256_of(out / SEGMENTER_WASM)}}
    (out / "inspector.json").write_text(json.dumps(settings, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    licence = "gpl-2.0" if any(weights_licence(bundle) == "gpl-2.0" for bundle in bundles) else "mit"
    (out / "README.md").write_text(static_readme(title, directions, licence), encoding="utf-8")
    (out / ".gitattributes").write_text(GITATTRIBUTES, encoding="utf-8")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo.static", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder to write (a static site, or a static Space's files)")
    parser.add_argument("--model", action="append", dest="models", metavar="BUNDLE",
                        help="an exported bundle folder; repeat for more (default: every models/*/onnx)")
    parser.add_argument("--title", default="attention-mt", help="the Space's title (default attention-mt)")
    parser.add_argument("--precision", choices=("float32", "int8"), default="float32",
                        help="the search graphs the page downloads: float32 (default: Python's tokens in every "
                             "browser) or int8 where a bundle has them (smaller; onnxruntime-web's int8 output is not "
                             "Python's)")
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        out = write_static(args.out, args.models, title=args.title, precision=args.precision, force=args.force)
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as error:
        raise SystemExit(f"python -m demo.static: {error}") from None
    files = sorted(p for p in out.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    print(json.dumps({"out": str(out), "files": len(files), "megabytes": round(size / 1e6, 1)}))
