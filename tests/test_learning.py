"""Hermes-R learns every task of partially labelled data: the training workflow (configs/train.json) on two phantom
datasets that annotate different structures of similar images, scored on held-out cases.

The run is in this process on one thread, so its result does not depend on the machine's load; the same scoring of a
freshly initialised network shows the bar cannot be met without learning. (tests/learning.py: the recipe and what
was measured.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import BUNDLE_ROOT, run_workflow_in_process
from learning import DICE_BAR, LEARNING_R, ONE_THREAD, PHANTOM_TASKS, phantom_dice, untrained_weights
from test_training import TINY, load


def test_learns_every_task_of_partially_labelled_phantoms(tmp_path: Path, phantoms: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [str(BUNDLE_ROOT / "configs" / "train.json")]
    started = time.perf_counter()
    run_workflow_in_process("training", "--datalist", phantoms["datalist"], "--runs_root", tmp_path / "runs",
                            "--run_name", "learn", *TINY, *LEARNING_R, env=ONE_THREAD, expect_ok=True)
    seconds = time.perf_counter() - started
    monkeypatch.chdir(BUNDLE_ROOT)
    dice = phantom_dice(configs, phantoms, load(tmp_path / "runs" / "learn" / "final.pt")["ema_model_state_dict"])
    before = phantom_dice(configs, phantoms, untrained_weights(configs, phantoms))
    print(f"Hermes-R phantom learning: {seconds:.0f} s, held-out Dice {json.dumps(dice)} (bar {DICE_BAR}); "
          f"untrained {json.dumps(before)}")
    assert set(dice) == set(before) == PHANTOM_TASKS
    assert max(before.values()) < DICE_BAR / 2, f"the untrained network already scores {before}: the bar is too low"
    for name, value in dice.items():
        assert value >= DICE_BAR, f"held-out Dice of '{name}' is {value:.3f} < {DICE_BAR} (all: {dice})"
