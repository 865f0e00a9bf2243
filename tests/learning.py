"""What the learning tests share (test_learning.py, test_learning_medformer.py, test_incremental.py): the phantoms'
grid and the held-out Dice of trained weights, computed here rather than trusted from the workflow's own log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

#: The phantoms' own grid: at the demo's 3 mm their 32³ volumes shrink to 16³ inside the 32³ window.
PHANTOM_SPACING = [1.5, 1.5, 1.5]
#: What every learning test asks of every task, held out.
DICE_BAR = 0.8


def phantom_dice(configs: list[str], phantoms: dict, weights: dict, overrides: dict | None = None) -> dict[str, float]:
    """Held-out Dice per task of (EMA) weights, computed here, not by the workflow: the network the configs build at
    base 8, each phantom on its own grid in its dataset's task list plus one null, as trained and published
    (``overrides``: more config values, e.g. the extra registries a fine-tuned network's size needs)."""
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInferer

    from scripts.predict import WindowPredictor

    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"datalist": phantoms["datalist"], "spacing": PHANTOM_SPACING, "base_channels": 8, **(overrides or {})})
    registry = parser.get_parsed_content("task_registry")
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(weights)
    predictor, inferer = WindowPredictor(network, amp=False), SlidingWindowInferer((32, 32, 32), 1, 0.25)
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for sample in parser.get_parsed_content("validate#dataset"):
            task_ids = torch.as_tensor(sample["task_index"]).reshape(-1).tolist()
            tasks = torch.tensor([task_ids + [-1]])
            modality = torch.as_tensor(sample["modality_index"]).reshape(1)
            predicted = (inferer(sample["image"][None], predictor, tasks, modality)[0] > 0.5).numpy()
            truth = np.asarray(sample["label"]) > 0
            for channel, task_id in enumerate(task_ids):
                p, t = predicted[channel], truth[channel]
                totals.setdefault(registry.task_by_id(task_id).name, []).append(2 * (p & t).sum() / (p.sum() + t.sum()))
    return {name: float(np.mean(values)) for name, values in totals.items()}


def untrained_weights(configs: list[str], phantoms: dict, seed: int = 0) -> dict:
    """A freshly initialised network of the configs (seeded): the control that shows a learning test's bar is out
    of reach without learning."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"datalist": phantoms["datalist"], "spacing": PHANTOM_SPACING, "base_channels": 8})
    torch.manual_seed(seed)
    return parser.get_parsed_content("network_def").state_dict()


#: A test-size Hermes-M: one attention block per fusion site, 2³-token maps, one fusion layer, expansion 2 (the
#: fixture's shape); the release depth (2, 4, 8, 4, 2 blocks) costs about twice as much per iteration at base 8.
TEST_SIZE_M = {"attention_blocks": [1, 1, 1, 1, 1], "map_size": 2, "fusion_depth": 1, "expansion": 2}


def write_test_size_overlay(folder: Path) -> Path:
    """A config overlay (after configs/hermes_m.json) whose network_def is the test-size Hermes-M."""
    network = {"_target_": "$scripts.networks.backbone_class(@backbone)", "in_channels": 1,
               "base_channels": "@base_channels", "num_tasks": "$@task_registry.num_tasks",
               "num_modalities": "$@task_registry.num_modalities", "modality_tokens": 10, **TEST_SIZE_M}
    path = folder / "test_size_network.json"
    path.write_text(json.dumps({"network_def": network}))
    return path


PHANTOM_TASKS = {"synthetic ellipsoid organ", "synthetic box lesion", "synthetic sphere marker"}
#: Hermes-R's learning recipe: the phantoms' own grid (fills the 32³ window), LAMB at lr 5e-3 after a short warm-up,
#: EMA 0.9 (0.99 would average over most of a short run), no random affine (16 cases per dataset), 200 steps of 2
#: windows. Held-out Dice organ / box / marker, one thread, training seeds 0, 1, 2 (``--seed``):
#: - before (organ +200 HU, box -200 HU, marker -600 HU, structures about 1 % of the volume; 240 steps): seed 0
#:   0.934 / 0.857 / 0.991, seed 1 0.781 / 0.271 / 0.974 (the box, as bright against the body as the unannotated
#:   organ, was long answered together with it);
#: - now (scripts.phantoms: organ +300, box -400, marker -700, each about 2 % of the volume; 200 steps): seed 0
#:   0.968 / 0.981 / 0.978, seed 1 0.957 / 0.946 / 0.962, seed 2 0.900 / 0.000 / 0.768 (the box's output dies early
#:   on this seed: 0.141 after 240 steps, 0.000 at lr 3e-3, 0.665 with 3 windows per step for 160 steps; not solved).
#: What did not work (seed 0): 160 steps 0.777 / 0.732 / 0.629 (seed 2: box 0.000); 120 steps (lr 5e-3, 1e-2 or 2e-2,
#: old or new intensities, a textured box) box 0.50 at best; 240 steps of one window (box 0.48) or at base width 4
#: (marker 0.40); a 32×32×16 grid of 3 mm slices (box 0.18). The loss stays on a plateau for 100-150 steps whatever the
#: recipe, so fewer steps are not safe.
LEARNING_R = ["--spacing", json.dumps(PHANTOM_SPACING), "--max_epochs", "5", "--iterations_per_epoch", "40",
              "--val_interval", "5", "--warmup_epochs", "0.25", "--learning_rate", "0.005", "--ema_decay", "0.9",
              "--affine_prob", "0"]
#: The learning runs' threads: one, as the measured runs (several threads split sums differently: other weights).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
#: Hermes-M's: the same grid, steps, rate and EMA; the overlay's own loss weights, weight decay and no warm-up.
#: Measured as above: before (240 steps, seed 0) 0.938 / 0.927 / 0.991; now (200 steps) seed 0 0.973 / 0.996 / 0.971,
#: seed 1 0.979 / 0.997 / 0.943, seed 2 0.987 / 0.998 / 0.990.
LEARNING_M = ["--spacing", json.dumps(PHANTOM_SPACING), "--max_epochs", "5", "--iterations_per_epoch", "40",
              "--val_interval", "5", "--learning_rate", "0.005", "--ema_decay", "0.9", "--affine_prob", "0"]


def assert_learns_every_task(label: str, configs: list[str], recipe: list[str], tmp_path: Path, phantoms: dict,
                             monkeypatch) -> None:
    """Train with ``configs`` and ``recipe`` in this process on one thread, then require every task's held-out Dice
    at the bar, and the same scoring of the untrained network far below it (the bar cannot be met without
    learning)."""
    import time

    from conftest import BUNDLE_ROOT, run_workflow_in_process
    from test_training import TINY, load

    started = time.perf_counter()
    run_workflow_in_process("training", "--datalist", phantoms["datalist"], "--runs_root", tmp_path / "runs",
                            "--run_name", "learn", *TINY, *recipe, configs=configs, env=ONE_THREAD, expect_ok=True)
    seconds = time.perf_counter() - started
    monkeypatch.chdir(BUNDLE_ROOT)
    dice = phantom_dice(configs, phantoms, load(tmp_path / "runs" / "learn" / "final.pt")["ema_model_state_dict"])
    before = phantom_dice(configs, phantoms, untrained_weights(configs, phantoms))
    print(f"{label} phantom learning: {seconds:.0f} s, held-out Dice {json.dumps(dice)} (bar {DICE_BAR}); "
          f"untrained {json.dumps(before)}")
    assert set(dice) == set(before) == PHANTOM_TASKS
    assert max(before.values()) < DICE_BAR / 2, f"the untrained network already scores {before}: the bar is too low"
    for name, value in dice.items():
        assert value >= DICE_BAR, f"held-out Dice of '{name}' is {value:.3f} < {DICE_BAR} (all: {dice})"
