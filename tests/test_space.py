"""The Hugging Face Space folder runs on its own: its requirements.txt in a fresh venv where torch cannot be
installed, its app.py launched on a loopback port and called through gradio_client."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ROOT, free_port
from demo.space import main as space_main
from demo.space import space_readme, weights_licence, write_space
from serve import Translator


def test_space_folder_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        space_main(["--out", str(tmp_path)])
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_space_runs_in_a_fresh_venv_without_torch(tmp_path):
    space = write_space(tmp_path / "space")
    readme = (space / "README.md").read_text(encoding="utf-8")
    front_matter = readme.split("---")[1]
    for key in ("sdk: gradio", "sdk_version: ", "app_file: app.py", "python_version: "):
        assert key in front_matter
    assert "license: gpl-2.0" in front_matter and "Ding" in readme  # the shipped weights learned from the GPL dictionary
    requirements = (space / "requirements.txt").read_text()
    assert "torch" not in requirements and "gradio==" in requirements
    assert not (space / "core" / "model.py").exists() and (space / "models" / "en-de" / "onnx" / "encoder.onnx").is_file()
    assert (space / "models" / "en-de" / "onnx" / "weights.bin").is_file()  # the graphs' shared weights
    assert "*.bin filter=lfs" in (space / ".gitattributes").read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    constraints = tmp_path / "no-torch.txt"
    constraints.write_text("torch<0\n")  # no version satisfies it: anything that needs torch fails to install
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                    "requirements.txt", "-c", str(constraints)], cwd=space, check=True, timeout=900)
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ""}
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            assert app.poll() is None, (tmp_path / "app.log").read_text()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Space app did not start within 120 s"
            time.sleep(0.5)
        from gradio_client import Client

        text = "A man in a blue jacket is riding his bicycle down a busy street."
        translation, confidence, notices = Client(url, verbose=False).predict(text, "English → German", 5,
                                                                              api_name="/translate")
        assert translation == Translator(ROOT / "models" / "en-de" / "onnx").translate([text])[0].text
        assert notices == "" and confidence.startswith("✓")  # the calibration travelled with the bundle
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()


def test_space_licence_follows_the_weights(tmp_path):
    bundle = tmp_path / "model" / "onnx"
    bundle.mkdir(parents=True)
    assert weights_licence(bundle) == "mit"  # no metrics.json: the project's own licence
    (bundle.parent / "metrics.json").write_text('{"license": "GPL-2.0-or-later (trained on Ding)"}')
    assert weights_licence(bundle) == "gpl-2.0"
    (bundle.parent / "metrics.json").write_text('{"license": "MIT"}')
    assert weights_licence(bundle) == "mit"
    assert "license: mit" in space_readme("t", ["en→de"]) and "Ding" not in space_readme("t", ["en→de"])
