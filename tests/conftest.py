"""Shared pytest setup: make the bundle's ``scripts`` package importable and locate the shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "bundle"
SHARED_ROOT = REPO_ROOT.parent / "shared"
sys.path.insert(0, str(BUNDLE_ROOT))


@pytest.fixture(scope="session")
def bundle_root() -> Path:
    return BUNDLE_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures beside the checkout (present on CI); tests that need it skip with the reason otherwise."""
    path = SHARED_ROOT / "fixtures"
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (they ship in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def sample_suite() -> dict:
    """The built-in sample suite (real pyradiomics/mricron-data cases + synthetic PET) as {"root", "datalist",
    "task_registry", ...}; fetched once from PyPI/Debian into $HERMES_SAMPLE_DIR or ~/.cache/... and reused after."""
    from scripts.sample_suite import ensure_sample_suite

    return ensure_sample_suite()
