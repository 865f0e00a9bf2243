"""Hermes-R learns every task of partially labelled data: the training workflow (configs/train.json) on two phantom
datasets that annotate different structures of similar images, scored on held-out cases.

The run is in this process on one thread, so its result does not depend on the machine's load; the same scoring of a
freshly initialised network shows the bar cannot be met without learning. (tests/learning.py: the recipe and what
was measured.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BUNDLE_ROOT
from learning import LEARNING_R, assert_learns_every_task


def test_learns_every_task_of_partially_labelled_phantoms(tmp_path: Path, phantoms: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [str(BUNDLE_ROOT / "configs" / "train.json")]
    assert_learns_every_task("Hermes-R", configs, LEARNING_R, tmp_path, phantoms, monkeypatch)
