#!/usr/bin/env bash
# The GPU checks of the case pipeline in one run (about 5 minutes on an H100/H200), printing one table at the end:
# one window under each speed setting, a whole abdomen CT with the shipped settings, a batch of 4 with a background
# worker, GPU-vs-CPU label agreement, a training step and a 1-GPU torchrun training on phantoms.
# Usage (repository root, a CUDA machine with the requirements installed):
#   bash bench/device_check.sh [RESULTS_DIR] [BLOCKS_DIR]
# BLOCKS_DIR: the reference blocks of tests/test_case_pipeline.py (ct/ and mr/ subfolders) for the GPU-vs-CPU label
# agreement; skipped without it. Each step writes RESULTS_DIR/<step>.json (and .log) as it finishes.
set -uo pipefail
out="${1:-device_results}"
blocks="${2:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
step() {  # name, command...: run, keep the log, never stop the other steps
  local name="$1"; shift
  local began=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - began)) s" | tee -a "$out/steps.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$out/gpu.txt"
step window python3 bench/bench_window.py --device cuda --batch 1 4 --json "$out/window.json"
step case python3 bench/bench_end_to_end.py --device cuda --json "$out/case.json"
step batch python3 bench/bench_end_to_end.py --device cuda --cases 4 --workers 1 --json "$out/batch.json"
if [ -n "$blocks" ]; then
  step agreement python3 bench/device_agreement.py --inputs "$blocks" --json "$out/agreement.json"
fi
step train_step python3 bench/bench_train.py --cuda-only --iterations 10
step torchrun_train bash -c "cd bundle && python3 -c \"from scripts.sample_suite.phantom_datasets import make_phantom_datasets as m; print(m('/tmp/phantoms', n_cases=4, size=64)['datalist'])\" > /tmp/phantoms.txt && python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m monai.bundle run training --config_file \"['configs/train.json','configs/multi_gpu_train.json']\" --datalist \$(tail -1 /tmp/phantoms.txt) --runs_root /tmp/runs --roi_size '[64,64,64]' --max_epochs 1 --iterations_per_epoch 20 --batch_size 2"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\n| check | result |\n|---|---|")
print(f"| GPU | {(out / 'gpu.txt').read_text().strip().replace(chr(10), '; ')} |")
for name in ("window", "case", "batch", "agreement"):
    path = out / f"{name}.json"
    if not path.exists():
        print(f"| {name} | no result (see {name}.log) |")
        continue
    data = json.loads(path.read_text())
    if name == "window":
        for run in data["runs"]:
            print(f"| window x{run['windows_per_call']} {run['setting']} | {run['ms_per_window']} ms/window, "
                  f"{run['ratio_to_plain']}x plain, max prob diff {run['max_prob_diff_to_plain']} |")
    elif name == "agreement":
        for case, numbers in data.items():
            print(f"| GPU vs CPU {case} | {numbers} |")
    else:
        for run in data["runs"]:
            print(f"| {name} {' '.join(run['settings'])} ({data['tasks']}, {data['cases']} case(s)) | "
                  f"{run['per_case_s']} s/case = {run['per_case_in_published_windows']} published windows "
                  f"({data['published_window_s']} s); GPU busy {run.get('gpu_busy_fraction')} "
                  f"(mean {run.get('gpu_mean_utilisation')} %); stages {run['stages_s']} |")
for line in (out / "steps.txt").read_text().splitlines():
    print(f"| step | {line} |")
for name in ("train_step", "torchrun_train"):
    log = (out / f"{name}.log").read_text() if (out / f"{name}.log").exists() else ""
    print(f"| {name} (last lines) | {' / '.join(l.strip() for l in log.strip().splitlines()[-3:])[:600]} |")
PY
