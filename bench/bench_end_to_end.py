"""Whole cases file in to files out through ``python -m monai.bundle run inference``, beside one published window
measured in the same run (an experiment, not a test).

The case is an abdomen-sized synthetic CT (default 512x512x300 at 0.78x0.78x1.25 mm, a body ellipse with organ-like
blobs and noise) segmented with random release-size weights (Hermes-R, base width 32) and the default CT task
selection (``--modality ct``: 6 dataset contexts, 60 tasks), or one dataset's tasks (``--tasks amos_ct``). The
workflow runs with ``--profile true``; its per-stage seconds come from the summary line. On CUDA the GPU's busy
fraction is sampled with ``nvidia-smi`` while the case runs.

The reference unit is one 128^3 window of one dataset's context (AMOS CT: 15 tasks + a null token) through the
network alone, timed in this process: fp32 on the CPU, bf16 autocast on CUDA, no channels-last, no cuDNN autotuning.
The network computes exactly what the published Hermes computes (tests/test_network_parity.py), and on an H200 its
window took 65.3 ms against the published code's 66.4 ms, so it stands for "one published window".

    python bench/bench_end_to_end.py --device cpu --size 256 256 61 --spacing 0.7 0.7 5 --tasks amos_ct
    python bench/bench_end_to_end.py --device cuda --cases 3 --workers 2 --json e2e.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))


def synthetic_ct(path: Path, size: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0) -> Path:
    """An abdomen-like CT volume (HU) stored LPS like most scanners' NIfTI conversions."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in size]
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1
    volume = np.full(size, -1000, dtype=np.int16)
    volume[body] = 40
    for _ in range(8):  # organ-like blobs of different densities
        centre, radius = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.1, 0.25)
        z = axes[2][None, None, :]
        blob = ((x[..., None] - centre[0]) ** 2 + (y[..., None] - centre[1]) ** 2 + (z - centre[2]) ** 2) < radius**2
        volume[blob & body[..., None]] = int(rng.uniform(-50, 250))
    volume = (volume + rng.normal(0, 15, size).astype(np.float32)).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def release_weights(path: Path, base_channels: int) -> Path:
    import torch

    from scripts.networks.hermes import HermesResUNet

    torch.manual_seed(0)
    torch.save(HermesResUNet(base_channels=base_channels, num_tasks=72).state_dict(), path)
    return path


def published_window_seconds(device: str, base_channels: int) -> float:
    """One 128^3 window, AMOS CT context (15 tasks + null), network alone, plain settings."""
    import torch

    from scripts.networks.hermes import HermesResUNet
    from scripts.registry import TaskRegistry

    registry = TaskRegistry.load(str(BUNDLE / "configs" / "task_registry.json"))
    tokens = torch.tensor([[*registry.task_ids("amos_ct"), -1]], device=device)
    net = HermesResUNet(base_channels=base_channels, num_tasks=72).to(device).eval()
    window = torch.randn(1, 1, 128, 128, 128, device=device)
    modality = torch.zeros(1, dtype=torch.long, device=device)
    torch.backends.cudnn.benchmark = False
    times = []
    warmup, repeats = (2, 5) if device == "cuda" else (1, 2)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for k in range(warmup + repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            net(window, tokens, modality, return_modality_logits=False)
            if device == "cuda":
                torch.cuda.synchronize()
            if k >= warmup:
                times.append(time.perf_counter() - began)
    return float(np.median(times))


class GpuBusy:
    """Samples nvidia-smi's utilisation every 100 ms while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:  # type: ignore[union-attr]
                if self._stop.is_set():
                    proc.terminate()
                    break
                if line.strip().isdigit():
                    self.samples.append(float(line))

    def __enter__(self) -> GpuBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def busy(self) -> float:
        return float(np.mean([s > 0 for s in self.samples])) if self.samples else float("nan")

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def run_cases(args: argparse.Namespace, folder: Path, weights: Path, extra: list[str]) -> dict:
    inputs = folder / "in"
    inputs.mkdir(exist_ok=True)
    first = synthetic_ct(inputs / "abdomen0.nii.gz", tuple(args.size), tuple(args.spacing))
    for k in range(1, args.cases):
        (inputs / f"abdomen{k}.nii.gz").write_bytes(first.read_bytes())
    out = folder / f"out{len(list(folder.glob('out*')))}"
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
               "--input", str(inputs if args.cases > 1 else first), "--output_dir", str(out), "--ckpt_path",
               str(weights), "--base_channels", str(args.base_channels), "--modality", "ct", "--profile", "true", *extra]
    if "--workers" not in extra:
        command += ["--workers", str(args.workers)]
    if args.tasks:
        command += ["--tasks", args.tasks]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    began = time.perf_counter()
    if args.device == "cuda":
        with GpuBusy() as gpu:
            done = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, env=env)
    else:
        gpu, done = None, subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"inference failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    total = re.search(r"Summary: .*, ([\d.]+) s in total", done.stdout)
    profile = re.search(r"Profile \(seconds summed over this process's cases\): (.*)", done.stdout)
    stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) s", profile.group(1))) if profile else {}
    result = {"process_wall_s": round(wall, 2), "cases_s": float(total.group(1)) if total else None,
              "stages_s": stages, "settings": extra}
    if gpu is not None:
        result["gpu_busy_fraction"] = round(gpu.busy, 3)
        result["gpu_mean_utilisation"] = round(gpu.mean, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.78, 0.78, 1.25))
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--tasks", default=None, help="e.g. amos_ct; default: the default CT selection")
    parser.add_argument("--cases", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=[""],
                        help="extra command-line settings, one run each (quoted, e.g. '--channels_last false')")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {"device": args.device, "size": list(args.size), "spacing": list(args.spacing), "cases": args.cases,
               "workers": args.workers, "tasks": args.tasks or "default CT selection", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        weights = release_weights(Path(tmp) / "release.pt", args.base_channels)
        results["published_window_s"] = round(published_window_seconds(args.device, args.base_channels), 4)
        for variant in args.variants:
            run = run_cases(args, Path(tmp), weights, variant.split())
            run["per_case_s"] = round(run["cases_s"] / args.cases, 2) if run["cases_s"] else None
            run["per_case_in_published_windows"] = (
                round(run["per_case_s"] / results["published_window_s"], 1) if run["per_case_s"] else None)
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
