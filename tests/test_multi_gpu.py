"""configs/multi_gpu_train.json under a real 2-process ``torchrun`` on CPU (gloo backend)."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from test_training import TINY, load, phantom_args, phantoms, run_training  # noqa: F401  (phantoms is a fixture)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available in this build")
def test_two_process_torchrun_on_cpu(tmp_path, phantoms):  # noqa: F811
    runs = tmp_path / "runs"
    done = run_training(
        "--runs_root", str(runs), "--run_name", "ddp", *phantom_args(phantoms), *TINY,
        "--max_epochs", "1", "--iterations_per_epoch", "2", "--batch_size", "1",
        configs=("configs/train.json", "configs/multi_gpu_train.json"),
        launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"),
    )
    log = done.stdout + done.stderr
    saved = re.findall(r"rank (\d+) saved (\S+)", log)
    assert saved, f"no checkpoint was written:\n{log[-3000:]}"
    assert {rank for rank, _ in saved} == {"0"}, f"a rank other than 0 wrote a checkpoint: {saved}"
    assert {path.rsplit('/', 1)[-1] for _, path in saved} >= {"latest.pt", "final.pt", "best.pt"}
    final = load(runs / "ddp" / "final.pt")
    # 2 iterations, counted once (every process runs the same 2 synchronised steps)
    assert (final["epoch"], final["iteration"]) == (1, 2)
    assert not any(k.startswith("module.") for k in final["model_state_dict"]), "DDP wrapper leaked into the keys"
    assert len(list((runs / "ddp").glob("events.out.tfevents.*"))) == 2, "TensorBoard files from more than rank 0"
    assert "val_mean_dice" in log
