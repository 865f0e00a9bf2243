"""What the Model Zoo checks on a bundle beyond its verifier: the formatting tools it runs on the bundle's Python (black,
isort, flake8 with its plugins, at the settings of pyproject.toml and .flake8, which mirror the Model Zoo's), the
config ids its tooling reads, the model card's template sections, and no large file outside models/."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import BUNDLE_ROOT, REPO_ROOT

#: The Model Zoo's model card template, in its order (docs/README.md may add sections between them).
TEMPLATE_SECTIONS = ("Model Overview", "Data", "Preprocessing", "Training configuration", "Input", "Output",
                     "Performance", "MONAI Bundle Commands", "References", "License")
#: Ids the Model Zoo's tooling reads from each workflow config.
REQUIRED_IDS = {"inference.json": ("bundle_root", "device", "network_def", "inferer", "output_dir"),
                "train.json": ("bundle_root", "device", "network_def", "train#trainer", "train#dataset#data",
                               "val_interval")}
LARGE_FILE_LIMIT = 25 * 2**20


@pytest.mark.parametrize("tool", [
    ["black", "--check", "--diff", "."],
    ["isort", "--check-only", "--diff", "."],
    ["flake8", "."],
])
def test_bundle_python_passes_the_model_zoo_formatting_tools(tool: list[str]) -> None:
    settings = ["--config", str(REPO_ROOT / "pyproject.toml")] if tool[0] == "black" else (
        ["--settings-path", str(REPO_ROOT / "pyproject.toml")] if tool[0] == "isort" else
        ["--config", str(REPO_ROOT / ".flake8")])
    done = subprocess.run([sys.executable, "-m", tool[0], *settings, *tool[1:]], cwd=BUNDLE_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{tool[0]} on bundle/:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"


def test_flake8_plugins_of_the_model_zoo_are_installed() -> None:
    """Without its plugins flake8 would silently skip the B, C and N checks the Model Zoo runs."""
    done = subprocess.run([sys.executable, "-m", "flake8", "--version"], capture_output=True, text=True, timeout=60)
    for plugin in ("flake8-bugbear", "flake8-comprehensions", "pep8-naming"):
        assert plugin in done.stdout, f"{plugin} missing: {done.stdout}"


@pytest.mark.parametrize("config", sorted(REQUIRED_IDS))
def test_workflow_configs_define_the_ids_model_zoo_tooling_reads(config: str) -> None:
    content = json.loads((BUNDLE_ROOT / "configs" / config).read_text())
    for required in REQUIRED_IDS[config]:
        node = content
        for part in required.split("#"):
            assert isinstance(node, dict) and part in node, f"{config} lacks '{required}'"
            node = node[part]


def test_model_card_follows_the_template_in_order() -> None:
    headings = re.findall(r"^#{1,2} (.+?)\s*$", (BUNDLE_ROOT / "docs" / "README.md").read_text(), flags=re.M)
    positions = []
    for section in TEMPLATE_SECTIONS:
        assert section in headings, f"docs/README.md lacks the section '{section}'"
        positions.append(headings.index(section))
    assert positions == sorted(positions), f"sections out of the template's order: {headings}"


def test_no_file_over_25_mb_outside_models() -> None:
    """Model Zoo refuses bundles with large files anywhere but models/ (weights arrive through large_files.yml)."""
    tracked = subprocess.run(["git", "ls-files", "bundle"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: nothing tracked to check")
    large = [path for path in tracked if not path.startswith("bundle/models/")
             and (REPO_ROOT / path).is_file() and (REPO_ROOT / path).stat().st_size > LARGE_FILE_LIMIT]
    assert not large, f"files over 25 MB outside models/: {large}"
