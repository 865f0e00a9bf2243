"""configs/multi_gpu_train.json under a real 2-process ``torchrun`` on CPU (gloo backend)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_workflow
from test_training import TINY, load


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available in this build")
def test_two_process_torchrun_on_cpu(tmp_path, phantoms):
    """Both ranks train and validate (the Dice is gathered from both halves of the validation set); only rank 0
    writes checkpoints and TensorBoard files; without --run_name both ranks use rank 0's run folder; ``--resume true``
    without --run_name continues it on both ranks."""
    runs = tmp_path / "runs"
    content = json.loads(Path(phantoms["datalist"]).read_text())
    by_dataset = {item["dataset"]: item for item in reversed(content["validation"])}
    datalist = Path(phantoms["datalist"]).with_name("one_validation_case_per_dataset.json")
    # rank 0 validates the first dataset's case, rank 1 the other's: rank 0 reports both only if Dice is gathered
    datalist.write_text(json.dumps({**content, "validation": list(by_dataset.values())}))
    common = ["--datalist", str(datalist), "--runs_root", str(runs), *TINY, "--iterations_per_epoch", "2",
              "--batch_size", "1"]
    distributed = {"configs": ("configs/train.json", "configs/multi_gpu_train.json"), "expect_ok": True,
                   "launcher": (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "-m")}
    done = run_workflow("training", *common, "--max_epochs", "1", **distributed)
    log = done.stdout + done.stderr
    (run_dir,) = runs.iterdir()  # one folder, named by rank 0
    saved = re.findall(r"rank (\d+) saved (\S+)", log)
    assert saved, f"no checkpoint was written:\n{log[-3000:]}"
    assert {rank for rank, _ in saved} == {"0"}, f"a rank other than 0 wrote a checkpoint: {saved}"
    assert sorted(path.rsplit("/", 1)[-1] for _, path in saved) == ["best.pt", "final.pt", "latest.pt"]
    final = load(run_dir / "final.pt")
    # 2 iterations, counted once (every process runs the same 2 synchronised steps)
    assert (final["epoch"], final["iteration"]) == (1, 2)
    assert not any(k.startswith("module.") for k in final["model_state_dict"]), "DDP wrapper leaked into the keys"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2, "TensorBoard files from more than rank 0"
    metrics = re.findall(r"Metrics -- (val_mean_dice: .*)", log)
    assert len(metrics) == 1, "validation metrics logged by more than rank 0"
    for task in ("synthetic ellipsoid organ", "synthetic box lesion", "synthetic sphere marker"):
        assert task in metrics[0], f"{task} missing from the gathered validation Dice: {metrics[0]}"

    resumed = run_workflow("training", *common, "--max_epochs", "2", "--resume", "true", **distributed)
    assert f"resumed {run_dir / 'latest.pt'} at epoch 1, iteration 2" in resumed.stdout + resumed.stderr
    assert [p.name for p in runs.iterdir()] == [run_dir.name]
    assert (load(run_dir / "final.pt")["epoch"], load(run_dir / "final.pt")["iteration"]) == (2, 4)
