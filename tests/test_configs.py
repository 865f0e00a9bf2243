"""The workflow configs are self-contained (no macro reaches another file, whose path MONAI would resolve against the
working directory), so Model Zoo tooling and users run them from anywhere; what train.json and inference.json both
define is defined identically, so the two can never drift apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUNDLE_ROOT

CONFIGS = BUNDLE_ROOT / "configs"
#: Ids both workflows define; they must agree (the published geometry reaches train.json through train_published.json).
SHARED_IDS = ("bundle_root", "device", "debug", "amp", "orientation", "native_slice_spacing", "task_registry_file",
              "task_registry_extra", "task_registry", "base_channels", "network_def", "image_reader", "load_transforms")
PUBLISHED_GEOMETRY = ("spacing", "roi_size")


def _config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.json")))
def test_no_config_pulls_ids_from_another_file(name: str) -> None:
    """A macro such as %configs/x.json#id is opened relative to the working directory: forbidden."""
    crossing = [s for s in _strings(_config(name)) if s.startswith("%") and not s.startswith("%#")
                and ".json" in s.split("#")[0]]
    assert not crossing, f"{name}: macros into other files break runs outside the bundle folder: {crossing}"


def test_train_and_inference_define_shared_ids_identically() -> None:
    train, inference, published = _config("train.json"), _config("inference.json"), _config("train_published.json")
    for key in SHARED_IDS:
        assert train[key] == inference[key], f"'{key}' differs between train.json and inference.json"
    for key in PUBLISHED_GEOMETRY:
        assert published[key] == inference[key], f"'{key}': train_published.json must restore inference.json's"
    assert set(inference["imports"]) <= set(train["imports"])
    for key, value in train["normalize_intensity"].items():  # inference adds the body statistics' settings only
        assert inference["normalize_intensity"][key] == value, f"normalize_intensity#{key} differs"


@pytest.mark.parametrize("name", ["inference.json", "train.json"])
def test_configs_resolve_from_another_working_directory(name: str, tmp_path: Path) -> None:
    """What Model Zoo's verifier and MONAI Label do: the config by absolute path, bundle_root given, cwd elsewhere."""
    code = ("from monai.bundle import ConfigParser; p = ConfigParser(); "
            f"p.read_config({str(CONFIGS / name)!r}); p['bundle_root'] = {str(BUNDLE_ROOT)!r}; "
            "n = p.get_parsed_content('network_def', lazy=False); print(type(n).__name__)")
    env = {**os.environ, "PYTHONPATH": str(BUNDLE_ROOT), "PYTHONWARNINGS": "ignore"}
    if name == "train.json":
        code = code.replace("p['bundle_root']", "p['task_registry_sources'] = []; p['bundle_root']")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "HermesResUNet"
