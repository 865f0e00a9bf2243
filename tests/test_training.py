"""The training workflow (configs/train.json) run for real through ``monai.bundle run``, as a user types it.

One run on the built-in sample suite (its default datalist) is shared by the checks of checkpoints, metrics,
tracking, refusals, resume and export; phantom runs check that a resumed run draws what an uninterrupted one draws
and that a user's datalist never brings the demo along. Runs whose refusal is the point are real processes (exit
status, one line on stderr); the others run in this interpreter (``run_workflow_in_process``). That training learns
is tested in test_learning.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BUNDLE_ROOT, run_workflow, run_workflow_in_process

TRAIN_CONFIG = "configs/train.json"
#: A tiny network and window so that a run costs seconds on two CPU cores.
TINY = ["--base_channels", "8", "--roi_size", "[32,32,32]", "--val_overlap", "0", "--sw_batch_size", "4"]
#: The shared sample-suite run: one epoch of two iterations at 4 mm, validated once.
SUITE = [*TINY, "--spacing", "[4,4,4]", "--iterations_per_epoch", "2", "--batch_size", "2"]


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_failure(done: subprocess.CompletedProcess, *parts: str) -> None:
    """Non-zero exit, no traceback, and a last line ``error: ...`` holding every part; nothing was trained."""
    assert done.returncode != 0, done.stdout[-2000:]
    line = last_line(done)
    assert line.startswith("error: ") and all(part in line for part in parts), (line, parts)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert "train_loss" not in done.stdout, "training started before the problem was reported"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def tiny_network(num_tasks: int, num_modalities: int = 6) -> torch.nn.Module:
    from scripts.networks.hermes import HermesResUNet

    return HermesResUNet(in_channels=1, base_channels=8, num_tasks=num_tasks, num_modalities=num_modalities)


def dead_pid() -> int:
    """The id of a process that has exited (what a killed save leaves in its temporary file's name)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, sample_suite) -> dict:
    """One epoch on the sample suite, tracked with MLflow, with the default datalist (no --datalist)."""
    runs = tmp_path_factory.mktemp("suite") / "runs"
    started = time.perf_counter()
    done = run_workflow_in_process("training", "--runs_root", runs, "--run_name", "s", *SUITE, "--max_epochs", "1",
                                   "--tracking", "mlflow", expect_ok=True)
    print(f"sample-suite run: {time.perf_counter() - started:.0f} s")
    return {"runs": runs, "run_dir": runs / "s", "log": done.stdout + done.stderr, "suite": sample_suite}


# ------------------------------------------------------------------------------------------ the shared run
def test_sample_suite_run_writes_checkpoints_metrics_and_tracking(suite_run: dict) -> None:
    from scripts.registry import TaskRegistry

    run_dir = suite_run["run_dir"]
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["best.pt", "final.pt", "latest.pt"]
    assert [p.name for p in run_dir.glob(".*")] == [".hermes.lock"], "a temporary checkpoint file was left behind"
    assert sorted(p.name for p in run_dir.glob("*.json")) == ["run.json", "run.tasks.json"]  # what the run is
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2, "TensorBoard files of trainer and evaluator"

    latest, best, final = (load(run_dir / name) for name in ("latest.pt", "best.pt", "final.pt"))
    assert (final["epoch"], final["iteration"]) == (1, 2) and "optimizer_state_dict" not in final
    assert {"model_state_dict", "ema_model_state_dict", "optimizer_state_dict", "lr_scheduler_state_dict",
            "rng_state", "epoch", "iteration", "best_metric", "best_metric_epoch"} <= set(latest)
    assert latest["lr_scheduler_state_dict"]["last_epoch"] == 2
    assert 0.0 <= best["best_metric"] <= 1.0 and best["best_metric_epoch"] == 1
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json", [suite_run["suite"]["task_registry"]])
    network = tiny_network(registry.num_tasks)
    network.load_state_dict(final["ema_model_state_dict"])  # strict: the config's network, keys and shapes
    assert any(not torch.equal(final["model_state_dict"][k], v) for k, v in final["ema_model_state_dict"].items()
               if v.is_floating_point()), "the EMA weights equal the raw weights: the EMA was not averaging"

    log = suite_run["log"]
    validation = json.loads(Path(suite_run["suite"]["datalist"]).read_text())["validation"]
    for dataset in {item["dataset"] for item in validation}:  # every validation dataset, with per-task values
        assert re.search(rf"val_mean_dice/{dataset}: \d\.\d{{4}}", log), f"no validation Dice for {dataset}"
    assert re.search(r"val_mean_dice/sample_colin27_t1/cerebellum: \d\.\d{4}", log)
    assert "nan" not in log.lower().split("metrics --")[-1].split("\n")[0]
    check_mlflow_run(suite_run["runs"] / "mlruns.db", iterations=2)


def check_mlflow_run(database: Path, iterations: int) -> None:
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    assert database.is_file(), f"no MLflow store at {database}"
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(str(database.resolve())))
    experiment = client.get_experiment_by_name("hermes_universal_segmentation")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == iterations and all(np.isfinite(m.value) for m in history)
    assert "val_mean_dice" in run.data.metrics, "the validation metrics did not reach MLflow"
    assert run.info.run_name == "s", "the MLflow run is named after the run folder"


def test_fresh_run_never_continues_or_rewrites_a_run(suite_run: dict) -> None:
    """``--resume false`` once meant true and silently rewrote the newest run; now it refuses the used folder."""
    latest = suite_run["run_dir"] / "latest.pt"
    before = latest.stat().st_mtime_ns
    common = ["--runs_root", str(suite_run["runs"]), "--run_name", "s", *SUITE, "--max_epochs", "2"]
    # one as a process (what a user sees), the other words in this process (the same check, without the 8 s start)
    for word, runner in (("false", run_workflow), ("no", run_workflow_in_process)):
        refused = runner("training", *common, "--resume", word)
        assert_one_line_failure(refused, "already holds", "pass --resume true")
        assert "Loading dataset" not in refused.stdout + refused.stderr, "the data was cached before the refusal"
    assert_one_line_failure(run_workflow_in_process("training", *common, "--resume", "maybe"),
                            "--resume: expected true or false, got 'maybe'")
    assert latest.stat().st_mtime_ns == before, "a refused run touched the checkpoint"


def test_truncated_latest_on_resume_is_one_line(suite_run: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "t").mkdir(parents=True)
    data = (suite_run["run_dir"] / "latest.pt").read_bytes()
    (runs / "t" / "latest.pt").write_bytes(data[: len(data) // 3])
    done = run_workflow("training", "--runs_root", runs, "--run_name", "t", *SUITE, "--max_epochs", "2", "--resume",
                        "true")
    assert_one_line_failure(done, str(runs / "t" / "latest.pt"), "truncated")
    assert "Loading dataset" not in done.stdout + done.stderr, "the data was cached before the refusal"


def test_resume_continues_removes_stale_temporary_and_exports(suite_run: dict, tmp_path: Path) -> None:
    from scripts.registry import TaskRegistry, companions_of
    from scripts.weights import load_weights

    runs = tmp_path / "runs"
    (runs / "s").mkdir(parents=True)
    shutil.copy2(suite_run["run_dir"] / "latest.pt", runs / "s" / "latest.pt")
    first = load(runs / "s" / "latest.pt")
    stale = runs / "s" / f".latest.pt.{dead_pid()}.k1ll3d.tmp.pt"  # a save killed half-way
    stale.write_bytes(b"half a checkpoint")
    exported = tmp_path / "models" / "model.pt"
    done = run_workflow_in_process("training", "--runs_root", runs, "--run_name", "s", *SUITE, "--max_epochs", "2",
                                   "--resume", "True", "--export_to_bundle", "yes", "--export_path", exported,
                                   expect_ok=True)
    log = done.stdout + done.stderr
    assert f"resumed {runs / 's' / 'latest.pt'} at epoch 1, iteration 2" in log
    assert not stale.exists(), "the stale temporary of a killed save survived the next save of latest.pt"
    final = load(runs / "s" / "final.pt")
    assert (final["epoch"], final["iteration"]) == (2, 4), "training restarted instead of continuing"
    assert load(runs / "s" / "latest.pt")["lr_scheduler_state_dict"]["last_epoch"] == 4
    assert any(not torch.equal(v, final["model_state_dict"][k]) for k, v in first["model_state_dict"].items()
               if v.is_floating_point()), "the resumed run did not update the weights"

    weights = load(exported)  # the final EMA weights as a plain state dict, with the run's task list beside them
    assert weights.keys() == final["ema_model_state_dict"].keys()
    assert all(torch.equal(v, final["ema_model_state_dict"][k]) for k, v in weights.items())
    companion = json.loads(exported.with_name("model.tasks.json").read_text())
    assert "sample_colin27_t1" in companion["datasets"]
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json", companions_of(exported))
    assert load_weights(tiny_network(registry.num_tasks), exported).kind == "weights"  # what inference loads


def test_export_entry_exports_any_run_checkpoint(suite_run: dict, tmp_path: Path, phantoms: dict) -> None:
    """The export's task list is the run's own, even when --datalist now names another registry."""
    target = tmp_path / "best_model.pt"
    run_workflow_in_process("export", "--runs_root", suite_run["runs"], "--run_name", "s", "--export_checkpoint",
                            "best.pt", "--export_path", target, "--datalist", phantoms["datalist"], expect_ok=True)
    best = load(suite_run["run_dir"] / "best.pt")
    assert all(torch.equal(v, best["ema_model_state_dict"][k]) for k, v in load(target).items())
    assert (json.loads(target.with_name("best_model.tasks.json").read_text())
            == json.loads((suite_run["run_dir"] / "run.tasks.json").read_text()))
    refused = run_workflow("export", "--runs_root", suite_run["runs"], "--run_name", "s", "--export_path", target)
    assert_one_line_failure(refused, str(target), "already exists", "--overwrite true")
    assert "--export_to_bundle" not in refused.stderr, "the export entry's refusal speaks of training's export"
    missing = run_workflow("export", "--runs_root", suite_run["runs"], "--run_name", "s", "--export_checkpoint",
                           "best", "--export_path", tmp_path / "other.pt")
    assert_one_line_failure(missing, str(suite_run["run_dir"] / "best"), "no such run checkpoint",
                            "--export_checkpoint one of latest.pt, best.pt, final.pt", "this run has")


def test_a_run_checkpoint_is_weights_for_inference_and_the_converter(suite_run: dict, tmp_path: Path) -> None:
    """The sample-suite run adds tasks: ``--ckpt_path runs/NAME/best.pt`` used to fail with a shape misfit, and the
    converter with ``RuntimeError: Error(s) in loading state_dict``. The run's task list travels with its checkpoints."""
    from monai.bundle import ConfigParser

    from scripts.convert_checkpoint import convert
    from scripts.io.checkpoints import CheckpointError
    from scripts.registry import companions_of
    from scripts.weights import load_weights

    best = suite_run["run_dir"] / "best.pt"
    assert companions_of(best) == [str(suite_run["run_dir"] / "run.tasks.json")]
    parser = ConfigParser()  # what inference builds for --ckpt_path best.pt (its registry, backbone and network)
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE_ROOT), "ckpt_path": str(best), "base_channels": 8})
    registry = parser.get_parsed_content("task_registry")
    assert registry.num_tasks > 72, "the sample suite adds tasks: the point of this test"
    network = parser.get_parsed_content("network_def")
    assert load_weights(network, best).kind == "checkpoint (ema_model_state_dict)"

    written = convert(best, tmp_path / "model.pt", base_channels=8)
    assert load(written).keys() == load(best)["ema_model_state_dict"].keys()
    assert companions_of(written) == [str(tmp_path / "model.tasks.json")]
    assert load_weights(network, written).kind == "weights"
    with pytest.raises(CheckpointError) as err:  # told the published 72 tasks: the misfit is explained
        convert(best, tmp_path / "again.pt", base_channels=8, num_tasks=72)
    assert str(err.value).startswith(f"{best}: its task prior tables have {registry.num_tasks + 1} task rows")
    assert "task list" in str(err.value) and "\n" not in str(err.value)


def test_resume_with_other_shapes_is_refused(suite_run: dict) -> None:
    other = [("[48,48,48]" if previous == "--roi_size" else value) for previous, value in zip(["", *SUITE], SUITE)]
    refused = run_workflow("training", "--runs_root", suite_run["runs"], "--run_name", "s", *other, "--max_epochs",
                           "2", "--resume", "true")
    assert_one_line_failure(refused, f"--resume true: run {suite_run['run_dir']} was started with --roi_size "
                                     "[32, 32, 32] (asked: [48, 48, 48])")
    # refused before any case is loaded: caching a user's whole dataset first can take many minutes
    assert "Loading dataset" not in refused.stdout + refused.stderr, "the data was cached before the refusal"


# -------------------------------------------------------------------------------- failures before any work
def test_refused_export_is_refused_before_training(tmp_path: Path, phantoms: dict) -> None:
    target = tmp_path / "models" / "model.pt"
    target.parent.mkdir()
    target.write_bytes(b"the user's weights")
    done = run_workflow("training", "--datalist", phantoms["datalist"], "--runs_root", tmp_path / "runs", *TINY,
                        "--export_to_bundle", "true", "--export_path", target)
    assert_one_line_failure(done, str(target), "already exists and --export_to_bundle would replace it after training",
                            "--overwrite true")
    assert target.read_bytes() == b"the user's weights"
    assert not (tmp_path / "runs").exists(), "a run folder was made before the export was refused"


def test_a_window_the_network_cannot_take_is_refused_before_training(tmp_path: Path, phantoms: dict) -> None:
    """--roi_size [40,40,40] used to fail after the data was cached, inside the first forward pass, with a traceback
    about "(40, 40, 40)" and advice to pad the image."""
    done = run_workflow_in_process("training", "--datalist", phantoms["datalist"], "--runs_root", tmp_path / "runs",
                                   "--base_channels", "8", "--roi_size", "[40,40,40]")
    assert_one_line_failure(done, "--roi_size [40, 40, 40]: expected three window sides, each a positive multiple of "
                                  "16 (the network's total down-sampling); the nearest that fits: [48, 48, 48]")


def test_datalist_problems_end_in_one_line_naming_file_and_item(tmp_path: Path, phantoms: dict) -> None:
    content = json.loads(Path(phantoms["datalist"]).read_text())
    root = Path(phantoms["datalist"]).parent
    empty = root / "empty_training.json"
    empty.write_text(json.dumps({**content, "training": []}))
    no_label = root / "no_label.json"
    items = [dict(item) for item in content["training"]]
    del items[3]["label"]
    no_label.write_text(json.dumps({**content, "training": items}))
    for datalist, parts in ((empty, ("section 'training'", "is empty")),
                            (no_label, ("training item 3", "'label' is missing"))):
        done = run_workflow("training", "--datalist", datalist, "--runs_root", tmp_path / "runs", *TINY)
        assert_one_line_failure(done, f"datalist {datalist}", *parts)


def test_check_properties_of_train_config(tmp_path: Path, phantoms: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(BUNDLE_ROOT)
    workflow = ConfigWorkflow(config_file=str(BUNDLE_ROOT / TRAIN_CONFIG), workflow_type="train",
                              datalist=phantoms["datalist"], runs_root=str(tmp_path), run_name="props",
                              base_channels=8)
    workflow.initialize()
    assert workflow.check_properties() == []


# ------------------------------------------------------------------------------------ resume, user datalist
def test_resumed_run_draws_what_the_uninterrupted_run_draws(tmp_path: Path, phantoms: dict) -> None:
    """Epoch 2 of a 2-epoch run against a 1-epoch run resumed to 2 epochs: same items, crops and augmentations.

    The learning rate is made constant (poly power 0) so that both runs follow the same schedule; then the weights
    after epoch 2 are bitwise equal exactly when the resumed run drew the same samples (and restored the optimiser
    and EMA). No validation runs in between. The runs use a user's datalist with $HERMES_SAMPLE_DIR pointing at an
    unused folder: the sample suite is neither fetched nor merged into the run.
    """
    from scripts.registry import TaskRegistry

    runs, nowhere = tmp_path / "runs", tmp_path / "no_sample_suite"
    common = ["--datalist", phantoms["datalist"], "--runs_root", str(runs), *TINY, "--iterations_per_epoch", "2",
              "--val_interval", "5", "--lr_scheduler#power", "0"]
    env = {"HERMES_SAMPLE_DIR": str(nowhere), "OMP_NUM_THREADS": "1"}  # bitwise: sums split over threads may vary
    full = run_workflow_in_process("training", *common, "--run_name", "full", "--max_epochs", "2", env=env,
                                   expect_ok=True)
    run_workflow_in_process("training", *common, "--run_name", "part", "--max_epochs", "1", env=env, expect_ok=True)
    resumed = run_workflow_in_process("training", *common, "--run_name", "part", "--max_epochs", "2", "--resume", "1",
                                      env=env, expect_ok=True)

    def epoch2_losses(done: subprocess.CompletedProcess) -> list[str]:
        return re.findall(r"Epoch: 2/2, Iter: \d/2 -- train_loss: (\S+)", done.stdout + done.stderr)

    assert epoch2_losses(full) == epoch2_losses(resumed) and len(epoch2_losses(full)) == 2
    a, b = load(runs / "full" / "final.pt"), load(runs / "part" / "final.pt")
    for key in ("model_state_dict", "ema_model_state_dict"):
        different = [name for name in a[key] if not torch.equal(a[key][name], b[key][name])]
        assert not different, f"{key}: the resumed run drew other samples ({len(different)} tensors differ)"
    assert not nowhere.exists(), "training with --datalist fetched the sample suite"
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json", [phantoms["task_registry"]])
    assert a["ema_model_state_dict"]["fusion.0.task_prior"].shape[0] == registry.num_tasks + 1, \
        "the run's task list is not the base registry plus the datalist's own"
