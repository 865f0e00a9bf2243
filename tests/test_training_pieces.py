"""The modules of scripts/training one by one, in process: batch targets, per-task Dice, validation schedule, run
folder, checkpoints (atomic, fixed names, when each is written), resume, random-number state, export."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from conftest import BUNDLE_ROOT
from scripts.errors import SetupError
from scripts.io.atomic import OutputExistsError
from scripts.io.checkpoints import CheckpointError
from scripts.registry import TaskRegistry
from scripts.training.batch import HermesPrepareBatch, HermesTargets
from scripts.training.checkpoints import CheckpointContents, ResumeFromCheckpoint, RunCheckpoints
from scripts.training.dice_metric import PerTaskDice, PerTaskDiceHandler
from scripts.training.weights_export import check_export_target, export_run_weights
from scripts.training.rng import RandomStates, transform_random_states
from scripts.training.run_folder import RunFolderError, default_run_name, resolve_run_dir
from scripts.training.validation import ValidationSchedule


@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------ batch, metric
def test_prepare_batch_gives_network_args_and_targets(registry: TaskRegistry) -> None:
    batch = {"image": torch.randn(2, 1, 4, 4, 4), "label": torch.zeros(2, 2, 4, 4, 4, dtype=torch.uint8),
             "task_index": torch.tensor([[0, 1], [2, -1]]), "modality_index": torch.tensor([[0], [0]]),
             "dataset": ["lits", "kits"]}
    image, targets, args, kwargs = HermesPrepareBatch(registry)(batch, device="cpu")
    assert isinstance(targets, HermesTargets) and image.shape == (2, 1, 4, 4, 4) and kwargs == {}
    assert targets.label.dtype == torch.float32 and targets.modality_index.tolist() == [0, 0]
    names = list(registry.datasets)
    assert targets.dataset_index.tolist() == [names.index("lits"), names.index("kits")]
    assert args[0] is targets.task_index and args[1] is targets.modality_index
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        HermesPrepareBatch(registry)({**batch, "dataset": ["lits", "nope"]})
    with pytest.raises(KeyError, match="lacks keys \\['dataset'\\]"):
        HermesPrepareBatch(registry)({k: v for k, v in batch.items() if k != "dataset"})


def _targets(registry: TaskRegistry, label: torch.Tensor, tasks: list[list[int]], datasets: list[str]) -> HermesTargets:
    index = [list(registry.datasets).index(name) for name in datasets]
    return HermesTargets(label, torch.tensor(tasks), torch.zeros(len(datasets), dtype=torch.long), torch.tensor(index))


def test_per_task_dice_by_dataset_ignores_absent_tasks(registry: TaskRegistry, caplog) -> None:
    label = torch.zeros(2, 2, 4, 4, 4)
    label[0, 0, :2] = 1  # lits liver: 32 voxels; lits tumour (channel 1) absent from this small split
    label[1, 0, :, :2] = 1  # kits kidney: 32 voxels
    probs = torch.full((2, 2, 4, 4, 4), 0.1)
    probs[0, 0, :1] = 0.9  # half the liver: Dice 2*16/(16+32)
    probs[0, 1, :1] = 0.9  # tumour predicted where there is none: not scored (Dice undefined without truth)
    probs[1, 0, :, :2] = 0.6  # exact above the 0.5 threshold
    metric = PerTaskDice(registry)
    metric(probs, _targets(registry, label, [[0, 1], [2, -1]], ["lits", "kits"]))
    assert float(metric.aggregate()) == pytest.approx((2 / 3 + 1.0) / 2)
    assert metric.per_pair == pytest.approx({("lits", "liver"): 2 / 3, ("kits", "kidney"): 1.0})
    assert metric.per_dataset() == pytest.approx({"lits": 2 / 3, "kits": 1.0})

    metric.reset()  # a validation without any labelled structure scores 0, not NaN, and says so
    with caplog.at_level(logging.WARNING):
        metric(probs, _targets(registry, torch.zeros(2, 2, 4, 4, 4), [[0, 1], [2, -1]], ["lits", "kits"]))
        assert float(metric.aggregate()) == 0.0
    assert "no case holds any labelled structure" in caplog.text


def test_dice_handler_writes_key_metric_and_details(registry: TaskRegistry) -> None:
    label = torch.zeros(1, 2, 4, 4, 4)
    label[0, 1, :2] = 1
    batches = [{"pred": label * 0.8, "label": _targets(registry, label, [[2, 3]], ["kits"])}] * 2
    evaluator = Engine(lambda engine, batch: batch)
    PerTaskDiceHandler(registry).attach(evaluator, "val_mean_dice")
    evaluator.run(batches)
    metrics = evaluator.state.metrics
    assert metrics["val_mean_dice"] == 1.0 and isinstance(metrics["val_mean_dice"], float)
    assert metrics["val_mean_dice/kits"] == 1.0 and metrics["val_mean_dice/kits/kidney tumor"] == 1.0
    assert "val_mean_dice/kits/kidney" not in metrics  # absent from the labels: left out, not NaN


def test_validation_schedule_every_interval_and_last_epochs() -> None:
    published = ValidationSchedule(interval=25, final_epochs=20)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 200
    due = [epoch for epoch in range(1, 201) if published.due(engine, epoch)]
    assert due == [25, 50, 75, 100, 125, 150, 175] + list(range(181, 201))

    class Recorder:
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def run(self, epoch: int) -> None:
            self.epochs.append(epoch)

    handler = ValidationSchedule(interval=4, final_epochs=4)
    handler.validator = Recorder()  # type: ignore[assignment]
    trainer = Engine(lambda e, b: None)
    handler.attach(trainer)
    trainer.run(range(2), max_epochs=10)
    assert handler.validator.epochs == [4, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="interval >= 1"):
        ValidationSchedule(interval=0)


def test_validation_window_settings_are_refused_before_the_first_epoch() -> None:
    """--val_overlap 1 used to fail at the first validation, after a whole epoch of training (MONAI checks per call)."""
    from types import SimpleNamespace

    from monai.inferers import SlidingWindowInferer

    for settings, message in (({"overlap": 1.0}, "--val_overlap: expected the windows' overlap, a fraction in [0, 1)"),
                              ({"sw_batch_size": 0}, "--sw_batch_size: expected 1 or more windows per network call"),
                              ({"roi_size": [40, 40, 40]}, "--roi_size [40, 40, 40]: expected three window sides")):
        inferer = SlidingWindowInferer(**{"roi_size": [32, 32, 32], "sw_batch_size": 1, "overlap": 0.25, **settings})
        with pytest.raises(SetupError, match=re.escape(message)):
            ValidationSchedule(interval=1, validator=SimpleNamespace(inferer=inferer))


# ------------------------------------------------------------------------------------------------- run folder
def test_run_folder_never_reuses_a_run_and_resume_needs_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    run_dir = Path(resolve_run_dir(runs, "x"))
    assert run_dir.is_dir() and resolve_run_dir(runs, "x") == str(run_dir)  # an empty folder may be reused
    (run_dir / "final.pt").write_bytes(b"weights")
    with pytest.raises(RunFolderError, match="already holds final.pt; pass --resume true"):
        resolve_run_dir(runs, "x")
    with pytest.raises(RunFolderError, match="latest.pt does not exist; nothing to resume"):
        resolve_run_dir(runs, "x", resume=True)
    for bad in ("", "..", "a/b"):
        with pytest.raises(RunFolderError, match="plain folder name"):
            resolve_run_dir(runs, bad)
    (run_dir / "latest.pt").write_bytes(b"state")  # damaged: refused before the run builds anything else
    with pytest.raises(CheckpointError, match="latest.pt: not a PyTorch checkpoint .* truncated"):
        resolve_run_dir(runs, "x", resume=True)
    torch.save({"epoch": 1}, run_dir / "latest.pt")
    assert resolve_run_dir(runs, "x", resume=True) == str(run_dir)

    assert re.fullmatch(r"\d{8}-\d{6}", default_run_name(runs))  # the start time
    monkeypatch.setattr("scripts.training.run_folder.time.strftime", lambda fmt: "20240101-000000")
    assert default_run_name(runs) == "20240101-000000"
    (runs / "20240101-000000").mkdir()  # a run started in the same second gets its own folder
    assert default_run_name(runs) == "20240101-000000_1"
    older = runs / "older"
    older.mkdir()
    (older / "latest.pt").write_bytes(b"state")
    assert default_run_name(runs, resume=True) == "older"  # the newest latest.pt
    with pytest.raises(RunFolderError, match="no run under .* has a latest.pt"):
        default_run_name(tmp_path / "none", resume=True)


def test_a_run_folder_is_held_by_one_training_at_a_time(tmp_path: Path) -> None:
    """Two trainings into one --run_name started seconds apart both wrote the folder; the second now stops."""
    runs = tmp_path / "runs"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from scripts.training.run_folder import resolve_run_dir; "
         f"resolve_run_dir({str(runs)!r}, 'shared'); print('held', flush=True); time.sleep(120)"],
        cwd=BUNDLE_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for resume in (False, True):
            if resume:
                torch.save({"epoch": 1}, runs / "shared" / "latest.pt")
            with pytest.raises(SetupError, match=rf"^--run_name {re.escape(str(runs / 'shared'))} is in use by another "
                                                 rf"run \(pid {holder.pid}\); wait for it to finish or choose another "
                                                 "--run_name$"):
                resolve_run_dir(runs, "shared", resume=resume)
    finally:
        holder.kill()
        holder.wait()
    assert resolve_run_dir(runs, "shared", resume=True) == str(runs / "shared")  # free once the first has ended


def test_a_run_records_its_settings_and_task_list_and_resumes_only_with_them(tmp_path: Path) -> None:
    from scripts.registry import companions_of

    runs = tmp_path / "runs"
    extra = tmp_path / "my_tasks.json"
    extra.write_text(json.dumps({"datasets": {"my_ct": {"modality": "ct", "sample_weight": 1.0,
                                                        "intensity_aug_prob": 0.1}},
                                 "tasks": [{"id": 72, "dataset": "my_ct", "label": 1, "name": "my organ"}]}))
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json", [extra])
    settings = {"roi_size": (64, 64, 64), "spacing": [3.0, 3.0, 3.0], "base_channels": 8, "num_tasks": 73}
    run_dir = Path(resolve_run_dir(runs, "r", registry=registry, settings=settings))
    assert json.loads((run_dir / "run.json").read_text())["settings"]["roi_size"] == [64, 64, 64]
    assert companions_of(run_dir / "best.pt") == [str(run_dir / "run.tasks.json")]  # every checkpoint's task list
    assert TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json",
                             companions_of(run_dir / "best.pt")).num_tasks == 73
    torch.save({"epoch": 1}, run_dir / "latest.pt")
    assert resolve_run_dir(runs, "r", resume=True, settings={**settings, "roi_size": [64, 64, 64]}) == str(run_dir)
    with pytest.raises(RunFolderError) as err:
        resolve_run_dir(runs, "r", resume=True, settings={**settings, "roi_size": [32, 32, 32]})
    assert str(err.value) == (f"--resume true: run {run_dir} was started with --roi_size [64, 64, 64] (asked: "
                              "[32, 32, 32]); resume with the run's settings, or start a new run with another --run_name")


# ---------------------------------------------------------------------------------------- checkpoints, resume
class _Run:
    """A tiny trainer whose every iteration moves the weights, and an evaluator that 'validates' every epoch."""

    def __init__(self, scores: dict[int, float]) -> None:
        torch.manual_seed(0)
        self.network = nn.Conv3d(1, 1, 1)
        self.ema = nn.Conv3d(1, 1, 1)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1, momentum=0.9)
        self.trainer = Engine(self._step)
        self.evaluator = Engine(lambda e, b: None)
        self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = -1.0, -1
        self.evaluator.state.key_metric_name = "val_mean_dice"
        self.scores = scores

    def _step(self, engine: Engine, batch: int) -> None:
        self.optimizer.zero_grad()
        self.network(torch.ones(1, 1, 2, 2, 2)).sum().backward()
        self.optimizer.step()

    def validate(self, engine: Engine) -> None:
        """What MONAI's evaluator does: epoch = the trainer's, best metric and its epoch when improved."""
        state, epoch = self.evaluator.state, engine.state.epoch
        state.epoch, state.metrics = epoch, {"val_mean_dice": self.scores[epoch]}
        if self.scores[epoch] > state.best_metric:
            state.best_metric, state.best_metric_epoch = self.scores[epoch], epoch

    def attach_savers(self, run_dir: Path, save_interval: int) -> None:
        self.trainer.add_event_handler(Events.EPOCH_COMPLETED, self.validate)
        RunCheckpoints(run_dir, self.evaluator, save_interval=save_interval, network=self.network, ema_model=self.ema,
                       optimizer=self.optimizer).attach(self.trainer)


def test_checkpoints_when_and_what(tmp_path: Path, caplog) -> None:
    run = _Run({1: 0.2, 2: 0.1, 3: 0.3})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".latest.pt.{int(dead.stdout)}.x1y2.tmp.pt"  # what a save killed half-way leaves
    stale.write_bytes(b"half a checkpoint")
    run.attach_savers(tmp_path, save_interval=2)
    with caplog.at_level(logging.INFO):
        run.trainer.run(range(2), max_epochs=3)
    saves = [line for line in caplog.text.splitlines() if "rank 0 saved" in line]
    # epoch 1 improves, epoch 2 is a save epoch, epoch 3 improves and is saved at the end (not a save epoch)
    assert [Path(line.split()[-1]).name for line in saves] == ["best.pt", "latest.pt", "best.pt", "latest.pt",
                                                               "final.pt"]
    assert not stale.exists(), "the stale temporary of a killed save was not removed by the next save"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "final.pt", "latest.pt"]
    latest, best, final = (load(tmp_path / name) for name in ("latest.pt", "best.pt", "final.pt"))
    assert (latest["epoch"], latest["iteration"], latest["best_metric"], latest["best_metric_epoch"]) == (3, 6, 0.3, 3)
    assert "state" in latest["optimizer_state_dict"] and "optimizer_state_dict" not in final
    assert (best["epoch"], best["best_metric"]) == (3, 0.3)
    assert torch.equal(final["model_state_dict"]["weight"], run.network.weight)

    run = _Run({1: 0.5, 2: 0.1})  # the last epoch is a save epoch: latest.pt is not written twice
    caplog.clear()
    run.attach_savers(tmp_path / "b", save_interval=2)
    with caplog.at_level(logging.INFO):
        run.trainer.run(range(2), max_epochs=2)
    names = [Path(line.split()[-1]).name for line in caplog.text.splitlines() if "rank 0 saved" in line]
    assert names == ["best.pt", "latest.pt", "final.pt"]
    assert load(tmp_path / "b" / "best.pt")["epoch"] == 1  # epoch 2 validated worse


def test_resume_restores_objects_and_progress(tmp_path: Path) -> None:
    first = _Run({1: 0.2, 2: 0.4, 3: 0.1, 4: 0.5})
    first.attach_savers(tmp_path, save_interval=1)
    first.trainer.run(range(2), max_epochs=2)

    stopped = load(tmp_path / "latest.pt")

    second = _Run(first.scores)  # the same handler, told to resume: it reads latest.pt, then goes on writing
    second.trainer.add_event_handler(Events.EPOCH_COMPLETED, second.validate)
    RunCheckpoints(tmp_path, second.evaluator, resume=True, network=second.network, ema_model=second.ema,
                   optimizer=second.optimizer).attach(second.trainer)
    started: list[tuple] = []
    second.trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(
        (e.state.epoch, e.state.iteration, second.evaluator.state.best_metric, second.evaluator.state.best_metric_epoch,
         second.network.weight.detach().clone())))
    second.trainer.run(range(2), max_epochs=4)
    assert started[0][:4] == (3, 4, 0.4, 2)
    assert torch.equal(started[0][4], stopped["model_state_dict"]["weight"])
    assert second.optimizer.state_dict()["state"], "the optimiser moments were not restored"
    latest = load(tmp_path / "latest.pt")
    assert (latest["epoch"], latest["iteration"], latest["best_metric"], latest["best_metric_epoch"]) == (4, 8, 0.5, 4)

    contents = CheckpointContents(second.network, second.ema, second.optimizer)
    with pytest.raises(SetupError, match="is at epoch 4, not below --max_epochs 4"):
        ResumeFromCheckpoint(tmp_path / "latest.pt", contents).attach(_engine_with_max_epochs(4))


def _engine_with_max_epochs(max_epochs: int) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = max_epochs
    return engine


def test_resume_refuses_unusable_checkpoints_before_any_work(tmp_path: Path) -> None:
    network = nn.Conv3d(1, 1, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    contents = CheckpointContents(network, optimizer=optimizer)
    good = tmp_path / "latest.pt"
    torch.save({"model_state_dict": network.state_dict(), "optimizer_state_dict": optimizer.state_dict(), "epoch": 1,
                "iteration": 2}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{truncated}: .*truncated"):
        ResumeFromCheckpoint(truncated, contents)
    with pytest.raises(CheckpointError, match="lacks ema_model_state_dict; only a latest.pt"):
        ResumeFromCheckpoint(good, CheckpointContents(network, network, optimizer))
    with pytest.raises(CheckpointError, match="does not fit the configured network \\(other shape: weight"):
        ResumeFromCheckpoint(good, CheckpointContents(nn.Conv3d(1, 2, 1), optimizer=optimizer))
    ResumeFromCheckpoint(good, contents)  # the good one is accepted


# ----------------------------------------------------------------------------------------------- random state
def test_random_states_round_trip_every_source() -> None:
    from monai.transforms import Compose, RandAffined, RandGaussianNoised

    from scripts.data.transforms import RandomizeByDatasetProbd

    chain = Compose([RandAffined(keys="image", prob=0.5, rotate_range=0.3),
                     RandomizeByDatasetProbd(RandGaussianNoised(keys="image", prob=1.0))])
    chain.set_random_state(seed=3)
    states = transform_random_states(chain)
    assert len(states) == 5  # Compose, RandAffined, its RandAffine and RandAffineGrid, the wrapper (shared)
    generator = torch.Generator().manual_seed(1)
    saver = RandomStates(chain, generator)

    def draw() -> list:
        return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.rand(2, generator=generator).tolist(), [s.rand() for s in states]]

    buffer = io.BytesIO()
    torch.save(saver.state_dict(), buffer)
    expected = draw()
    buffer.seek(0)
    saver.load_state_dict(torch.load(buffer, weights_only=True))
    assert draw() == expected
    with pytest.raises(ValueError, match="transform chain changed"):
        RandomStates(Compose([]), generator).load_state_dict(saver.state_dict())


# ------------------------------------------------------------------------------------------------------ export
def test_export_writes_ema_weights_with_the_runs_task_list_and_never_replaces_silently(tmp_path: Path) -> None:
    """The task list beside the export is the run's own (run.tasks.json in its folder), whatever registry the current
    command would build: ``run export --run_name NAME`` with another --datalist used to write that datalist's."""
    base = BUNDLE_ROOT / "configs" / "task_registry.json"
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    extra = tmp_path / "my_tasks.json"
    extra.write_text(json.dumps({"datasets": {"my_ct": {"modality": "ct", "sample_weight": 1.0,
                                                        "intensity_aug_prob": 0.1}},
                                 "tasks": [{"id": 72, "dataset": "my_ct", "label": 1, "name": "my organ"}]}))
    TaskRegistry.load(base, [extra]).write_task_list(run_dir / "run.tasks.json")
    ema = {"layer.weight": torch.arange(6.0).reshape(2, 3), "fusion.0.task_prior": torch.ones(74, 4)}
    checkpoint = run_dir / "final.pt"
    torch.save({"model_state_dict": {k: torch.zeros_like(v) for k, v in ema.items()}, "ema_model_state_dict": ema},
               checkpoint)
    target = tmp_path / "models" / "model.pt"
    assert export_run_weights(checkpoint, target, base) == str(target)
    assert torch.equal(load(target)["layer.weight"], ema["layer.weight"])
    companion = json.loads((tmp_path / "models" / "model.tasks.json").read_text())
    assert [task["name"] for task in companion["tasks"]] == ["my organ"]

    target.write_bytes(b"user file")
    with pytest.raises(OutputExistsError, match="already exists"):
        check_export_target(target, overwrite=False)
    with pytest.raises(OutputExistsError, match="already exists"):
        export_run_weights(checkpoint, target, base)
    assert target.read_bytes() == b"user file"
    published = tmp_path / "published_run" / "final.pt"  # a run without extra tasks: no task list
    published.parent.mkdir()
    torch.save({"ema_model_state_dict": {"layer.weight": ema["layer.weight"]}}, published)
    export_run_weights(published, target, base, overwrite=True)
    assert torch.equal(load(target)["layer.weight"], ema["layer.weight"])
    assert not (tmp_path / "models" / "model.tasks.json").exists(), "a stale task list stayed beside new weights"
    (run_dir / "run.tasks.json").unlink()  # the run's task list lost: its 73 task rows fit no list it has
    with pytest.raises(CheckpointError, match=r"final.pt: the weights hold 73 task rows but its task list \(none: the "
                                              r"published tasks\) gives 72: the weights' task list travels beside"):
        export_run_weights(checkpoint, tmp_path / "x.pt", base)
    torch.save({"epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a weights file nor a Hermes checkpoint"):
        export_run_weights(tmp_path / "other.pt", tmp_path / "x.pt", base)


# ------------------------------------------------------------------------------------------- validation as configured
def _train_config(monkeypatch: pytest.MonkeyPatch, *overlays: str, **values):
    from monai.bundle import ConfigParser

    monkeypatch.chdir(BUNDLE_ROOT)
    parser = ConfigParser()
    parser.read_config(["configs/train.json", *overlays] if overlays else "configs/train.json")
    parser.update({"datalist": None, **values})  # no datalist: the base registry only, nothing fetched
    return parser


def test_published_overlay_validates_on_the_published_schedule_and_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _train_config(monkeypatch, "configs/train_published.json")
    assert (parser["val_interval"], parser["val_final_epochs"], parser["max_epochs"]) == (25, 20, 200)
    assert parser.get_parsed_content("spacing") == [1.5, 1.5, 1.5]
    assert parser.get_parsed_content("roi_size") == [128, 128, 128] and parser["block_margin"] == 30
    assert parser.get_parsed_content("flags")["native_slice_spacing"] is True  # autoPET in-plane only, as published
    assert _train_config(monkeypatch).get_parsed_content("flags")["native_slice_spacing"] is False  # the demo


def test_validation_runs_dataset_contexts_and_survives_absent_tasks(registry: TaskRegistry, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """train.json's validation pieces on two one-case batches of pad_tasks_collate: each forward pass carries the
    case's dataset list plus one null; sigmoid probabilities of the windows are averaged uniformly; the null channel
    stays aligned with the padded label and is never scored; a task absent from the split (the liver tumour) keeps
    the mean finite, and best.pt is written."""
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SlidingWindowInferer
    from torch.utils.data import DataLoader

    from scripts.data.collate import pad_tasks_collate
    from scripts.predict import WindowPredictor

    parser = _train_config(monkeypatch, base_channels=4, roi_size=[32, 32, 32], sw_batch_size=2, val_overlap=0.5)
    predictor, inferer = parser.get_parsed_content("validate#network"), parser.get_parsed_content("validate#inferer")
    assert isinstance(predictor, WindowPredictor) and predictor.keep_null_channels
    assert isinstance(inferer, SlidingWindowInferer) and inferer.mode == "constant"  # uniform, as published
    seen: list[list[int]] = []
    predictor.network.register_forward_pre_hook(lambda module, args: seen.append(args[1][0].tolist()))

    def case(dataset: str, channels: int) -> dict:
        label = torch.zeros(channels, 40, 36, 36, dtype=torch.uint8)
        label[0, 4:20, 4:20, 4:20] = 1  # liver / kidney present, the tumours absent
        return {"image": torch.randn(1, 40, 36, 36), "label": label, "dataset": dataset,
                "task_index": torch.tensor(registry.task_ids(dataset)), "modality_index": torch.tensor(0)}

    loader = DataLoader([case("lits", 2), case("kits", 2)], batch_size=1, collate_fn=pad_tasks_collate)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=predictor,
                                    inferer=inferer, prepare_batch=parser.get_parsed_content("prepare_batch"),
                                    key_val_metric=parser.get_parsed_content("validate#key_metric"), decollate=False)
    trainer = Engine(lambda engine, batch: None)
    ValidationSchedule(interval=1, validator=evaluator).attach(trainer)
    RunCheckpoints(tmp_path, evaluator, network=predictor.network).attach(trainer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and never stalls on a busy machine
    try:
        trainer.run(range(1), max_epochs=1)
    finally:
        torch.set_num_threads(threads)

    assert {tuple(tasks) for tasks in seen} == {(0, 1, -1), (2, 3, -1)}  # never a list without its null
    metrics = evaluator.state.metrics
    assert np.isfinite(metrics["val_mean_dice"]) and "val_mean_dice/lits/liver" in metrics
    assert "val_mean_dice/lits/liver tumor" not in metrics and "val_mean_dice/kits/kidney tumor" not in metrics
    assert load(tmp_path / "best.pt")["best_metric"] == pytest.approx(metrics["val_mean_dice"])
