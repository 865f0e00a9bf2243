"""Hermes-M learns every task of partially labelled data: the overlay configs/hermes_m.json's recipe (0.5 main + 0.5
auxiliary loss, weight decay 0.05, no warm-up) with a test-size Hermes-M, on the phantoms and with the bar of
test_learning.py, and the same control: the weights the run starts from score far below the bar.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import BUNDLE_ROOT, run_workflow_in_process
from learning import (DICE_BAR, LEARNING_M, ONE_THREAD, PHANTOM_TASKS, phantom_dice, untrained_weights,
                      write_test_size_overlay)
from test_training import TINY, load


def test_overlay_learns_every_task_of_partially_labelled_phantoms(tmp_path: Path, phantoms: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [str(BUNDLE_ROOT / "configs" / c) for c in ("train.json", "hermes_m.json")]
    configs.append(str(write_test_size_overlay(tmp_path)))
    started = time.perf_counter()
    run_workflow_in_process("training", "--datalist", phantoms["datalist"], "--runs_root", tmp_path / "runs",
                            "--run_name", "learn", *TINY, *LEARNING_M, configs=configs, env=ONE_THREAD,
                            expect_ok=True)
    seconds = time.perf_counter() - started
    monkeypatch.chdir(BUNDLE_ROOT)
    dice = phantom_dice(configs, phantoms, load(tmp_path / "runs" / "learn" / "final.pt")["ema_model_state_dict"])
    before = phantom_dice(configs, phantoms, untrained_weights(configs, phantoms))
    print(f"Hermes-M phantom learning: {seconds:.0f} s, held-out Dice {json.dumps(dice)} (bar {DICE_BAR}); "
          f"untrained {json.dumps(before)}")
    assert set(dice) == set(before) == PHANTOM_TASKS
    assert max(before.values()) < DICE_BAR / 2, f"the untrained network already scores {before}: the bar is too low"
    for name, value in dice.items():
        assert value >= DICE_BAR, f"held-out Dice of '{name}' is {value:.3f} < {DICE_BAR} (all: {dice})"
