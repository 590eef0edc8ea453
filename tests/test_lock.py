"""The lock (requirements/lock.txt) agrees with pyproject.toml, and the lock tool finds what differs."""

import importlib.util
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "requirements" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)

PINS = lock.read_lock(lock.LOCK.read_text(encoding="utf-8"))


def pyproject_requirements() -> list[Requirement]:
    """Every requirement pyproject.toml names (base and every extra), without the extras that name the project."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [r for r in map(Requirement, listed) if canonicalize_name(r.name) != lock.PROJECT]


def test_every_pyproject_requirement_is_locked_inside_its_range():
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        assert name in PINS, f"{requirement} is in pyproject.toml but not in the lock: python requirements/lock.py refresh"
        version = Version(PINS[name][0])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock's {name}=={version} is outside pyproject.toml's {requirement}")


def test_the_lock_holds_nothing_pyproject_does_not_bring_in():
    direct = {name for name, (_, parents) in PINS.items() if lock.PROJECT in parents}
    assert direct == {canonicalize_name(r.name) for r in pyproject_requirements()}
    for name, (_, parents) in PINS.items():
        assert parents, f"{name} says nothing of what requires it"
        for parent in parents:
            assert parent == lock.PROJECT or parent in PINS or parent.startswith("-c"), (
                f"{name} is required by {parent}, which the lock does not hold")
    assert lock.closure(PINS, {lock.PROJECT}) == set(PINS), "every locked package is reachable from the project"


def test_the_lock_pins_the_cpu_torch_and_no_cuda_packages():
    assert PINS["torch"][0].startswith("2.13.0")
    assert not [name for name in PINS if name.startswith("nvidia-")]


def test_lock_text_is_read_with_multi_line_annotations():
    pins = lock.read_lock(
        "#\n# header\n#\nAiohttp==3.1\n    # via\n    #   ray\n    #   attention-mt\nray==2.0\n"
        "    # via attention-mt (pyproject.toml)\nsetuptools==80.0\n    # via torch\n")
    assert pins == {"aiohttp": ("3.1", ["ray", "attention-mt"]), "ray": ("2.0", ["attention-mt"]),
                    "setuptools": ("80.0", ["torch"])}
    assert lock.closure(pins, {"ray"}) == {"ray", "aiohttp"}


def test_check_finds_another_version_and_an_unlocked_package():
    pins = {"numpy": ("2.0.0", ["attention-mt"]), "tqdm": ("4.0", ["attention-mt"])}
    assert lock.differences(pins, {"numpy": "2.0.0", "pip": "26.0", "attention-mt": "0.1.0"}) == []
    assert lock.differences(pins, {"numpy": "2.1.0", "requests": "2.0"}) == [
        "numpy==2.1.0 is installed, the lock says 2.0.0", "requests==2.0 is installed but not in the lock"]


def test_refresh_reports_what_changed():
    old = {"a": ("1", []), "b": ("2", []), "c": ("3", [])}
    new = {"a": ("1", []), "b": ("2.1", []), "d": ("4", [])}
    assert lock.changes(old, new) == ["~ b 2 -> 2.1", "- c==3", "+ d==4"]


def test_the_project_entry_of_pip_compile_is_dropped():
    text = ("#    pip-compile --extra=dev pyproject.toml\nattention-mt @ file:///home/me/attention-mt\n"
            "    # via attention-mt (pyproject.toml)\nnumpy==2.0\n    # via attention-mt\n")
    assert lock.without_project(text) == (
        "#    python requirements/lock.py refresh (pip-compile, see requirements/lock.py)\nnumpy==2.0\n"
        "    # via attention-mt\n")


@pytest.mark.parametrize("name", ["gradio", "onnxruntime", "tokenizers", "numpy"])
def test_the_space_installs_the_locked_versions(name):
    from demo.space import locked_pins

    pins = locked_pins()
    assert pins[name] == PINS[name][0]
    assert "torch" not in pins and "transformers" not in pins
