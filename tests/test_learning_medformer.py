"""Hermes-M learns every task of partially labelled data: the overlay configs/hermes_m.json's recipe (0.5 main + 0.5
auxiliary loss, weight decay 0.05, no warm-up) with a test-size Hermes-M, on the phantoms and with the bar of
test_learning.py, and the same control: the weights the run starts from score far below the bar.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BUNDLE_ROOT
from learning import LEARNING_M, assert_learns_every_task, write_test_size_overlay


def test_overlay_learns_every_task_of_partially_labelled_phantoms(tmp_path: Path, phantoms: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [str(BUNDLE_ROOT / "configs" / c) for c in ("train.json", "hermes_m.json")]
    configs.append(str(write_test_size_overlay(tmp_path)))
    assert_learns_every_task("Hermes-M", configs, LEARNING_M, tmp_path, phantoms, monkeypatch)
