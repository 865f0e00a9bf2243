"""Model Zoo rules: schema-valid metadata with version and changelog, a large-file manifest, Model Zoo checks."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"


@pytest.fixture(scope="module")
def metadata(bundle_root: Path) -> dict:
    return json.loads((bundle_root / "configs" / "metadata.json").read_text())


def test_metadata_validates_against_the_model_zoo_schema(metadata: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert metadata["schema"].endswith(SCHEMA.name)
    jsonschema.validate(metadata, schema)


def test_metadata_rejects_what_the_schema_forbids(metadata: dict) -> None:
    """The vendored schema really checks something: a metadata without a version fails."""
    broken = {k: v for k, v in metadata.items() if k != "version"}
    with pytest.raises(jsonschema.ValidationError, match="version"):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_version_has_a_changelog_entry_and_pins_match_requirements(metadata: dict, bundle_root: Path) -> None:
    assert metadata["version"] in metadata["changelog"]
    requirements = {}
    for line in (bundle_root.parent / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            requirements[name.strip().lower()] = version.strip()
    assert requirements["monai"] == metadata["monai_version"]
    assert requirements["torch"] == metadata["pytorch_version"]
    assert requirements["numpy"] == metadata["numpy_version"]
    for package, version in metadata["required_packages_version"].items():
        assert requirements.get(package.lower()) == version, f"{package} pinned differently in requirements.txt"


def test_network_io_describes_image_in_and_pred_out(metadata: dict) -> None:
    io = metadata["network_data_format"]
    assert io["inputs"]["image"]["num_channels"] == 1
    assert "pred" in io["outputs"]


def test_large_files_manifest_is_valid_yaml(bundle_root: Path) -> None:
    manifest = yaml.safe_load((bundle_root / "large_files.yml").read_text())
    assert isinstance(manifest["large_files"], list)
    for entry in manifest["large_files"]:
        assert {"path", "url", "hash_val", "hash_type"} <= set(entry)


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_verify_net_in_out_passes_on_network_def(bundle_root: Path, config: str, monkeypatch) -> None:
    """Model Zoo's own check, on the release-size network_def of each workflow config (16³ input, one task)."""
    from monai.bundle import verify_net_in_out

    config_path = bundle_root / "configs" / config
    if not config_path.exists():
        pytest.fail(f"{config_path} is missing")
    monkeypatch.chdir(bundle_root)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_root / "configs" / "metadata.json"),
        config_file=str(config_path),
        device="cpu",
        n=1,
        any=1,
        extra_forward_args={
            "task_index": torch.tensor([[9]]),
            "modality_index": torch.tensor([0]),
            "return_modality_logits": False,
        },
    )
