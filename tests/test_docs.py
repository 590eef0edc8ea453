"""The README and docs/ stay true: every relative link resolves (files and #anchors), and every project command they
show parses (``python -m MODULE [SUBCOMMAND] --help`` exits 0)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("core", "export", "serve", "demo", "bench")
TORCH_FREE = ("serve", "demo")  # their command lines parse without torch; so does `python -m core` (torch on use)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")
COMMAND = re.compile(r"python3? -m ((?:" + "|".join(PACKAGES) + r")(?:\.[\w.]+)?)((?: (?:translate|http))?)")


def anchors(page) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def relative_links():
    for page in PAGES:
        for target in (link or image for link, image in LINK.findall(page.read_text(encoding="utf-8"))):
            if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto: are not checked (no internet here)
                yield pytest.param(page, target, id=f"{page.relative_to(ROOT)}->{target}")


@pytest.mark.parametrize("page, target", list(relative_links()))
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor:
        assert anchor in anchors(resolved), f"{target}: no heading with that anchor in {resolved.relative_to(ROOT)}"


def shown_commands():
    found = {}
    for page in PAGES:
        for module, subcommand in COMMAND.findall(page.read_text(encoding="utf-8")):
            found.setdefault((module, subcommand.strip()), page)
    for (module, subcommand), page in sorted(found.items()):
        marks = [] if module == "core" or module.split(".")[0] in TORCH_FREE else [pytest.mark.torch]
        yield pytest.param(module, subcommand, marks=marks, id=f"{module} {subcommand}".strip())


def test_the_docs_show_commands_of_every_surface():
    modules = {module for module, _ in (p.values[:2] for p in shown_commands())}
    assert {"core.train", "core.evaluate", "export", "serve", "demo", "demo.space", "bench"} <= modules


@pytest.mark.parametrize("module, subcommand", list(shown_commands()))
def test_shown_command_parses(module, subcommand):
    command = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-2000:])
