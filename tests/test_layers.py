"""Layers point one way: core <- export and serve <- demo, with bench on top; transformers is export.hf's alone.
Each module is imported in a fresh interpreter and the project packages (and heavy libraries) it pulled in are
compared with what its layer allows."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

WATCHED = ["core", "export", "serve", "demo", "bench", "torch", "ctranslate2", "ray", "gradio", "matplotlib",
           "transformers"]
TORCH_FREE_CORE = ["core", "core.bundle", "core.confidence", "core.config", "core.data", "core.ding", "core.heads", "core.mix",
                   "core.positional", "core.search", "core.tokenizer", "core.translator"]
TORCH_CORE = ["core.attention", "core.checkpoint", "core.decoding", "core.evaluate", "core.model", "core.train",
              "core.__main__"]
SERVE = ["serve", "serve.__main__", "serve.api", "serve.arguments", "serve.batcher", "serve.calibrate", "serve.loadtest",
         "serve.policy", "serve.schemas", "serve.sentences", "serve.server", "serve.translator", "serve.validation"]
DEMO = ["demo", "demo.app", "demo.beamtree", "demo.figures", "demo.handlers", "demo.heads", "demo.inside",
        "demo.lesson", "demo.space"]


def imported_by(module: str) -> set[str]:
    """The watched top-level packages loaded after importing module in a new interpreter."""
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            f"print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}} & set({WATCHED!r}))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_every_module_is_listed():
    """A new module must join a layer here, so the checks below cover it."""
    listed = set(TORCH_FREE_CORE + TORCH_CORE + SERVE + DEMO)
    found = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for package in ("core", "serve", "demo") for path in (ROOT / package).glob("*.py")}
    # serve.cluster needs Ray (the cluster extra); demo.__main__ starts the app when imported (it imports demo.app)
    assert found - {"serve.cluster", "demo.__main__"} == listed


@pytest.mark.parametrize("module", TORCH_FREE_CORE)
def test_torch_free_core_imports_nothing_above_it(module):
    assert imported_by(module) == {"core"}


@pytest.mark.torch
@pytest.mark.parametrize("module", TORCH_CORE)
def test_core_never_imports_serve_export_or_demo(module):
    assert imported_by(module) <= {"core", "torch", "matplotlib"}


@pytest.mark.parametrize("module", SERVE)
def test_serve_needs_neither_torch_nor_export(module):
    assert imported_by(module) == {"core", "serve"}


@pytest.mark.parametrize("module", DEMO)
def test_demo_needs_neither_torch_nor_export(module):
    assert imported_by(module) <= {"core", "serve", "demo", "gradio"}


@pytest.mark.torch
@pytest.mark.parametrize("module", ["export", "export.__main__", "export.onnx_export", "export.to_ctranslate2",
                                    "export.hf", "export.model_card", "export.optimum_env"])
def test_export_reads_core_only(module):
    """transformers too is loaded only when export.hf runs, never on import (serve and demo never load it)."""
    assert imported_by(module) <= {"core", "export", "torch"}
