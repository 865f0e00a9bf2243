"""Learning after release: growing tables, the incremental regime (configs/incremental.json), forgetting.json, and the
refusals that come before any training step.

Without training: the small published-format reference checkpoint grows by two tasks and a modality and every old
output stays bit-identical, frozen and through optimiser steps. With training (one shared phantom set-up for the module,
base 8, 32³): an "old" model learns the organ of synthetic_phantom_a; the incremental regime then learns the organ of
synthetic_phantom_b's images as a new task (a new dataset) with every old tensor frozen, and a short transfer run
measures forgetting.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
import torch

from conftest import BUNDLE_ROOT, run_workflow, run_workflow_in_process
from learning import ONE_THREAD, phantom_dice
from test_training import TINY, assert_one_line_failure, load

INCREMENTAL = ("configs/train.json", "configs/incremental.json")
RECIPE = ["--spacing", "[1.5,1.5,1.5]", "--ema_decay", "0.9", "--affine_prob", "0"]
OLD_TASK = "synthetic_phantom_a/synthetic ellipsoid organ"


# ------------------------------------------------------------------------------------ the published format, grown
@pytest.fixture(scope="module")
def reference(shared_fixtures: Path) -> dict:
    folder = shared_fixtures / "hermes_reference"
    return {"checkpoint": folder / "hermes_reference_checkpoint.pth",
            "io": torch.load(folder / "hermes_reference_io.pt", weights_only=True)}


def test_published_checkpoint_grows_by_two_tasks_and_a_modality_with_old_outputs_bit_identical(reference: dict) -> None:
    from scripts.networks.hermes import HermesResUNet
    from scripts.training.incremental import freeze_all_but_new_rows
    from scripts.training.lamb import Lamb
    from scripts.weights import held_rows, load_weights

    old = HermesResUNet(base_channels=8, num_tasks=9, num_modalities=4, size_divisor=1).eval()
    load_weights(old, reference["checkpoint"])  # the published format, converted in memory
    grown = HermesResUNet(base_channels=8, num_tasks=11, num_modalities=5, size_divisor=1)
    kind = load_weights(grown, reference["checkpoint"], grow_task_tables=True).kind
    assert "task prior tables grown from 9 to 11 tasks" in kind and "modality tables grown from 4 to 5" in kind
    plain = [(name, tuple(t.shape)) for name, t in grown.state_dict().items()]
    assert held_rows(reference["checkpoint"]) == {"task": 10, "modality": 4}
    trainable = freeze_all_but_new_rows(grown, held_rows(reference["checkpoint"]))
    assert trainable["task"] == 2 * (32 + 64 + 80 + 64 + 32) and trainable["shared"] == 0
    assert all(".parametrizations." in name for name, _ in grown.named_parameters())
    assert [(name, tuple(t.shape)) for name, t in grown.state_dict().items()] == plain  # the bundle layout, in order

    io = reference["io"]
    image, tasks = io["image"], io["task_index"]
    # the reference's second sample selects the old last modality row (3 of 4) by its index; the registry's way is -1,
    # which keeps selecting it after the table grew (row 4 of 5), while row 3 is now the new modality
    modality = torch.where(io["modality_index"] == 3, -1, io["modality_index"])
    assert (tasks == -1).any() and (modality == -1).any(), "the reference input carries null tokens and -1"

    def outputs(network: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            seg, mod = network.eval()(image, tasks, modality)
        return seg, mod[:, [0, 1, 2, -1]]  # the old modality classes (the unknown-MRI class stays last)

    published = outputs(old)
    torch.testing.assert_close(published[0], io["seg_logits"], rtol=1e-4, atol=1e-4)  # the published computation
    before = outputs(grown)
    assert torch.equal(before[0], published[0]), "a grown table changed an old task's logits"
    # the modality head's old classes keep their rows; a head with one class more may round its matrix product
    # differently (one float32 ulp), so the old classes are compared within 1e-6 here, bit for bit from now on
    torch.testing.assert_close(before[1], published[1], rtol=0, atol=1e-6)
    optimiser = Lamb(grown.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(2):  # train the new rows: two new tasks with the null, on the new modality (row 3)
        seg, mod = grown.train()(image, torch.tensor([[9, 10, -1]] * 2), torch.tensor([3, 3]))
        (seg.sigmoid().mean() + mod.logsumexp(1).mean()).backward()
        optimiser.step()
        optimiser.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(outputs(grown), before)), "an old output moved"
    weights = grown.state_dict()
    published = torch.load(reference["checkpoint"], weights_only=True)["ema_model_state_dict"]
    assert not torch.equal(weights["fusion.0.task_prior"][9:11], published["prior_init_fuse_2.task_prior"][9:10].expand(2, -1))
    reloaded = HermesResUNet(base_channels=8, num_tasks=11, num_modalities=5, size_divisor=1)
    reloaded.load_state_dict(weights)  # strict: what checkpoints and export write is a plain grown network
    assert all(torch.equal(a, b) for a, b in zip(outputs(reloaded), before))
    null_before = before[0][tasks == -1]
    assert torch.equal(outputs(reloaded)[0][tasks == -1], null_before), "the null token is still the null token"


def test_norm_running_statistics_cannot_move_frozen_layers() -> None:
    """Hermes has no such layer (InstanceNorm without running statistics); a network with one keeps them frozen."""
    from scripts.networks.hermes import HermesResUNet
    from scripts.training.incremental import freeze_all_but_new_rows, hold_running_statistics

    assert hold_running_statistics(HermesResUNet(base_channels=4, num_tasks=2, num_modalities=2)) == 0
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    freeze_all_but_new_rows(network, {})
    before = {name: t.clone() for name, t in network.state_dict().items()}
    network.train()(torch.randn(8, 3) * 5 + 2)
    assert list(network.parameters()) == [] and all(torch.equal(t, before[n]) for n, t in network.state_dict().items())


def test_weights_with_more_task_rows_than_the_registry_are_refused(reference: dict) -> None:
    from scripts.io.checkpoints import CheckpointError
    from scripts.networks.hermes import HermesResUNet
    from scripts.weights import start_from

    with pytest.raises(CheckpointError) as caught:
        start_from(HermesResUNet(base_channels=8, num_tasks=7, num_modalities=4), reference["checkpoint"])
    line = str(caught.value)
    assert line.startswith(str(reference["checkpoint"])) and "\n" not in line
    assert "10 task rows (tasks + null) but the task registry gives the network only 8" in line


def test_new_task_ids_may_not_be_the_null_row_or_reserved(tmp_path: Path) -> None:
    from scripts.registry import TaskRegistry, TaskRegistryError

    base = BUNDLE_ROOT / "configs" / "task_registry.json"
    dataset = {"mine": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1}}
    for task_id, reason in ((-1, "'id' must be an int >= 0"), (71, "id 71 is reserved")):
        extra = tmp_path / f"ids{task_id}.json"
        extra.write_text(json.dumps({"datasets": dataset, "tasks": [{"id": task_id, "dataset": "mine", "name": "x",
                                                                      "label": 1}]}))
        with pytest.raises(TaskRegistryError) as caught:
            TaskRegistry.load(base, [extra])
        assert str(caught.value).startswith(f"task registry {extra}") and reason in str(caught.value)


def test_a_registry_adds_a_modality_and_its_weights_carry_it(tmp_path: Path) -> None:
    from scripts.registry import TaskRegistry

    base = BUNDLE_ROOT / "configs" / "task_registry.json"
    extra = tmp_path / "us.json"
    extra.write_text(json.dumps({"modalities": {"us": 5}, "dicom_modalities": {"US": "us"},
                                 "datasets": {"echo": {"modality": "us", "sample_weight": 1.0,
                                                       "intensity_aug_prob": 0.1}},
                                 "tasks": [{"id": 120, "dataset": "echo", "name": "heart", "label": 1}]}))
    registry = TaskRegistry.load(base, [extra])
    assert registry.num_modalities == 7 and registry.modality_index("us") == 5
    assert registry.modality_name(-1) == "mr" and registry.modality_name(6) == "mr"  # -1 still the last row
    assert registry.parse_modality_choice("us") == "us" and registry.modality_from_dicom("US") == "us"
    registry.write_companion(tmp_path / "model.pt")
    again = TaskRegistry.load(base, [tmp_path / "model.tasks.json"])  # what inference reads beside the weights
    assert again.modalities == registry.modalities and again.task_by_id(120).name == "heart"


def test_without_old_datalist_the_run_says_forgetting_was_not_measured(caplog: pytest.LogCaptureFixture) -> None:
    from scripts.training.forgetting import ForgettingMeter

    meter = ForgettingMeter(None, None, "unused.pt", None, "unused")
    with caplog.at_level(logging.INFO):
        assert meter.measure_after() is None
    assert "forgetting was not measured: pass --old_datalist" in caplog.text


def test_old_datalist_without_finetune_is_refused_not_ignored() -> None:
    from scripts.errors import SetupError
    from scripts.training.forgetting import ForgettingMeter

    with pytest.raises(SetupError, match="--old_datalist old.json: .* add --finetune true"):
        ForgettingMeter("old.json", None, None, None, "unused")
    from ignite.engine import Engine, Events

    engine, meter = Engine(lambda e, b: None), ForgettingMeter(None, None, None, None, "unused")
    meter.attach(engine)  # a run that does not fine-tune measures nothing
    assert not engine.has_event_handler(meter.measure_before, Events.STARTED)
    assert not engine.has_event_handler(meter.measure_after, Events.COMPLETED)


# ------------------------------------------------------------------------------------------------ phantom runs
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The old model (organ of synthetic_phantom_a), then the incremental regime on synthetic_phantom_b's organ as a
    new task, then two transfer iterations; both fine-tuning runs measure forgetting on the old datalist."""
    from scripts.sample_suite import make_increment_datalists, make_phantom_datasets

    root = tmp_path_factory.mktemp("increment")
    phantoms = make_phantom_datasets(root / "phantoms", n_cases=16, size=32, n_holdout=2, seed=0)
    lists = make_increment_datalists(phantoms)
    runs, models = root / "runs", root / "models"
    started = time.perf_counter()
    run_workflow_in_process("training", "--datalist", lists["old"], "--runs_root", runs, "--run_name", "old", *TINY,
                            *RECIPE, "--learning_rate", "0.01", "--max_epochs", "2", "--iterations_per_epoch", "30",
                            "--val_interval", "2", "--export_to_bundle", "true", "--export_path", models / "old.pt",
                            env=ONE_THREAD, expect_ok=True)
    old_seconds = time.perf_counter() - started
    finetune = ["--finetune", "true", "--finetune_model_path", str(models / "old.pt"), "--old_datalist", lists["old"]]
    done = run_workflow_in_process("training", "--datalist", lists["new_organ"], "--runs_root", runs, "--run_name",
                                   "inc", *TINY, *RECIPE, *finetune, "--learning_rate", "0.05", "--max_epochs", "2",
                                   "--iterations_per_epoch", "15", "--val_interval", "2", configs=INCREMENTAL,
                                   env=ONE_THREAD, expect_ok=True)
    inc_seconds = time.perf_counter() - started - old_seconds
    transfer = run_workflow_in_process("training", "--datalist", lists["new_organ"], "--runs_root", runs,
                                       "--run_name", "transfer", *TINY, *RECIPE, *finetune, "--learning_rate", "0.005",
                                       "--max_epochs", "1", "--iterations_per_epoch", "2", expect_ok=True)
    print(f"old model {old_seconds:.0f} s, incremental {inc_seconds:.0f} s, all {time.perf_counter() - started:.0f} s")
    return {"lists": lists, "runs": runs, "models": models, "log": done.stdout + done.stderr,
            "transfer_log": transfer.stdout + transfer.stderr}


def test_incremental_regime_keeps_old_logits_learns_the_new_task_and_forgets_nothing(study: dict,
                                                                                     monkeypatch) -> None:
    from scripts.networks.hermes import HermesResUNet
    from scripts.weights import load_weights

    log, run_dir = study["log"], study["runs"] / "inc"
    assert "incremental check: old-task logits bit-identical before and after (model and EMA)" in log
    new_rows = (111 - 97) * (32 + 64 + 80 + 64 + 32)  # ids 97-110 (only 110 is used), every fusion site, base 8
    assert f"incremental: {new_rows} new task-row values, 0 new modality-row values and 0 shared" in log
    final = load(run_dir / "final.pt")
    # independently of the run's own check: the old task on a real old case, old weights against the run's EMA
    old, new = HermesResUNet(base_channels=8, num_tasks=97), HermesResUNet(base_channels=8, num_tasks=111)
    load_weights(old, study["models"] / "old.pt")
    new.load_state_dict(final["ema_model_state_dict"])  # strict: a plain network of the grown size
    window = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(old.eval()(window, torch.tensor([[96, -1]] * 2), torch.tensor([0, 0]))[0],
                           new.eval()(window, torch.tensor([[96, -1]] * 2), torch.tensor([0, 0]))[0])
    forgetting = json.loads((run_dir / "forgetting.json").read_text())
    assert list(forgetting["tasks"]) == [OLD_TASK]
    assert forgetting["tasks"][OLD_TASK]["difference"] == 0.0 and forgetting["mean"]["difference"] == 0.0
    assert re.search(r"forgetting: mean old-task Dice \d\.\d{4} before, \d\.\d{4} after, difference \+0\.0000", log)
    monkeypatch.chdir(BUNDLE_ROOT)
    dice = phantom_dice([str(BUNDLE_ROOT / c) for c in INCREMENTAL[:1]], {"datalist": study["lists"]["new_organ"]},
                        final["ema_model_state_dict"])
    print(f"incremental: held-out Dice of the new task {dice}, old task before {forgetting['tasks'][OLD_TASK]}")
    assert dice["synthetic ellipsoid organ"] >= 0.8, dice


def test_transfer_regime_writes_the_measured_forgetting(study: dict, monkeypatch) -> None:
    monkeypatch.chdir(BUNDLE_ROOT)
    forgetting = json.loads((study["runs"] / "transfer" / "forgetting.json").read_text())
    old_list = {"datalist": study["lists"]["old"]}
    before = phantom_dice([str(BUNDLE_ROOT / "configs" / "train.json")], old_list, load(study["models"] / "old.pt"))
    final = load(study["runs"] / "transfer" / "final.pt")["ema_model_state_dict"]
    config = [str(BUNDLE_ROOT / "configs" / "train.json")]
    extra = {"task_registry_extra": [str(Path(study["lists"]["new_organ"]).with_name("registry_new_organ.json"))]}
    after = phantom_dice(config, old_list, final, extra)
    entry = forgetting["tasks"][OLD_TASK]
    assert entry["before"] == pytest.approx(before["synthetic ellipsoid organ"], abs=1e-6)
    assert entry["after"] == pytest.approx(after["synthetic ellipsoid organ"], abs=1e-6)
    assert entry["difference"] == pytest.approx(entry["after"] - entry["before"], abs=1e-12)
    assert forgetting["cases"] == 2 and entry["before"] > 0.5
    assert "forgetting: mean old-task Dice" in study["transfer_log"]


def test_an_incremental_run_resumes_as_if_never_stopped(study: dict, tmp_path: Path) -> None:
    """``--resume true`` in the incremental regime brings back the frozen network, the optimiser of the new rows and
    the run's random streams: one epoch then a resume to two ends bit-identical to two epochs in one go, and the old
    tasks' logits are still the old model's. The learning rate is constant (poly power 0): a run told to stop after one
    epoch decays it over that epoch, so only then do both runs follow the same schedule."""
    common = ["--datalist", study["lists"]["new_organ"], "--runs_root", tmp_path, *TINY, *RECIPE, "--finetune", "true",
              "--finetune_model_path", study["models"] / "old.pt", "--learning_rate", "0.05",
              "--iterations_per_epoch", "3", "--val_interval", "2", "--lr_scheduler#power", "0"]
    for name, epochs, resume in (("whole", "2", "false"), ("halves", "1", "false"), ("halves", "2", "true")):
        done = run_workflow_in_process("training", *common, "--run_name", name, "--max_epochs", epochs, "--resume",
                                       resume, configs=INCREMENTAL, env=ONE_THREAD, expect_ok=True)
    log = done.stdout + done.stderr
    assert f"resumed {tmp_path / 'halves' / 'latest.pt'} at epoch 1, iteration 3" in log
    assert "incremental check: old-task logits bit-identical before and after (model and EMA)" in log
    whole, halves = load(tmp_path / "whole" / "final.pt"), load(tmp_path / "halves" / "final.pt")
    assert (halves["epoch"], halves["iteration"]) == (whole["epoch"], whole["iteration"]) == (2, 6)
    for key in ("model_state_dict", "ema_model_state_dict"):
        changed = [name for name, tensor in whole[key].items() if not torch.equal(tensor, halves[key][name])]
        assert not changed, f"{key}: the resumed run ended elsewhere in {changed[:5]}"


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_finetune_inputs_fail_in_one_line_before_training(study: dict, tmp_path: Path) -> None:
    lists, models = study["lists"], study["models"]
    unlabelled = tmp_path / "old_unlabelled.json"
    content = json.loads(Path(lists["old"]).read_text())
    content["validation"] = [{k: v for k, v in item.items() if k != "label"} for item in content["validation"]]
    content["task_registry"] = str(Path(lists["old"]).with_name("registry_old.json"))
    for item in content["validation"]:
        item["image"] = str(Path(lists["old"]).parent / item["image"])
    unlabelled.write_text(json.dumps(content))
    redefined = tmp_path / "redefined.json"
    registry = json.loads(Path(lists["new_organ"]).with_name("registry_new_organ.json").read_text())
    registry["tasks"][0]["id"] = 96  # the old model's organ id under another dataset and name
    registry["tasks"][0]["name"] = "synthetic kidney"
    (tmp_path / "registry_redefined.json").write_text(json.dumps(registry))
    datalist = json.loads(Path(lists["new_organ"]).read_text())
    datalist["task_registry"] = "registry_redefined.json"
    for section in ("training", "validation"):
        for item in datalist[section]:
            item["image"] = str(Path(lists["new_organ"]).parent / item["image"])
            item["label"] = str(Path(lists["new_organ"]).parent / item["label"])
    redefined.write_text(json.dumps(datalist))
    common = ["--runs_root", str(tmp_path / "runs"), *TINY, "--finetune", "true", "--finetune_model_path",
              str(models / "old.pt"), "--export_to_bundle", "true", "--export_path", str(tmp_path / "models" / "m.pt")]
    cases = [
        (["--datalist", lists["new_organ"], "--old_datalist", str(unlabelled), "--run_name", "a"],
         [str(unlabelled), "validation item 0", "'label' is missing"]),
        (["--datalist", str(redefined), "--run_name", "b"],
         [str(tmp_path / "registry_redefined.json"), "id 96 already means 'synthetic ellipsoid organ'"]),
    ]
    for overrides, parts in cases:
        done = run_workflow("training", *common, *overrides, configs=INCREMENTAL)
        assert_one_line_failure(done, *parts)
        assert not list((tmp_path / "runs").glob("*/*.pt")) and not (tmp_path / "models").exists()
