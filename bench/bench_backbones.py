"""Hermes-R and Hermes-M side by side, per 128³ window: parameters, FLOP, seconds, peak memory (random weights).

What one window costs at inference: the network in eval mode on a 1 × 1 × 128³ window with one dataset's context
(AMOS CT: 15 task tokens + 1 null, CT modality), main output only, as ``scripts.predict.WindowPredictor`` runs it.

- FLOP: counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only, no arithmetic):
  convolutions, matrix products and attention, 2 FLOP per multiply-add; norms, activations and interpolation are not
  counted (they are a few percent).
- Seconds: wall-clock and process CPU seconds of one forward pass after one warm-up pass, fp32 on the CPU (and bf16
  autocast on CUDA with ``--devices cpu cuda``); each backbone and device in its own subprocess, so the peak memory
  (``ru_maxrss``: weights + activations of that process; ``torch.cuda.max_memory_allocated`` on CUDA) is its own.

    python bench/bench_backbones.py                      # CPU, both backbones, release size
    python bench/bench_backbones.py --devices cpu cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "bundle"
BACKBONES = ("r", "m")


def _network(backbone: str, base_channels: int):
    sys.path.insert(0, str(BUNDLE_ROOT))
    from scripts.networks import backbone_class

    return backbone_class(backbone)(in_channels=1, base_channels=base_channels, num_tasks=72, num_modalities=6)


def _context(device: str):
    """AMOS CT's task list and one null, CT modality: what inference runs per window for an abdominal CT."""
    import torch

    sys.path.insert(0, str(BUNDLE_ROOT))
    from scripts.predict import context_tensor, dataset_contexts
    from scripts.registry import TaskRegistry

    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json")
    tasks = context_tensor(dataset_contexts(registry, ["amos_ct"])).to(device)
    return tasks, torch.tensor([registry.modality_index("ct")], device=device)


def count_flop(backbone: str, base_channels: int, roi: int) -> dict:
    """FLOP of one window, counted on the meta device (no memory, no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tasks, modality = _context("cpu")
    with torch.device("meta"):
        net = _network(backbone, base_channels).eval()
        image = torch.empty(1, 1, roi, roi, roi)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():  # forward_contexts: the input checks read values, which meta tensors lack
        net.forward_contexts(net.encode_context_free(image), tasks.to("meta"), modality.to("meta"),
                             return_modality_logits=False)
    by_op = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"tflop": round(counter.get_total_flops() / 1e12, 3), "by_op_tflop": {k: round(v / 1e12, 3)
                                                                                   for k, v in by_op.items()}}


def measure(backbone: str, device: str, base_channels: int, roi: int, threads: int | None) -> dict:
    """One warm-up and one timed forward pass of one window; returns seconds and peak memory of this process."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = _network(backbone, base_channels).to(device).eval()
    tasks, modality = _context(device)
    image = torch.randn(1, 1, roi, roi, roi, device=device)

    def one_window() -> tuple[float, float]:
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            seg = net(image, tasks, modality, return_modality_logits=False)
        if device == "cuda":
            torch.cuda.synchronize()
        assert seg.shape == (1, tasks.shape[1], roi, roi, roi)
        return time.perf_counter() - wall, time.process_time() - cpu

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup, _ = one_window()
    wall, cpu = one_window()
    result = {
        "backbone": backbone, "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda"
        else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)",
        "precision": "bf16 autocast" if device == "cuda" else "fp32",
        "parameters": sum(p.numel() for p in net.parameters()), "state_tensors": len(net.state_dict()),
        "warmup_s": round(warmup, 3), "seconds_per_window": round(wall, 3), "cpu_seconds_per_window": round(cpu, 3),
        "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),  # KiB on Linux
    }
    if device == "cuda":
        result["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


def _worker(args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--base-channels", str(args.base_channels), "--roi", str(args.roi), *extra]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--base-channels", type=int, default=32, help="32 is the release size of both backbones")
    parser.add_argument("--roi", type=int, default=128, help="window side in voxels (published: 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this new JSON file")
    parser.add_argument("--flop-worker", choices=BACKBONES, help=argparse.SUPPRESS)
    parser.add_argument("--time-worker", nargs=2, metavar=("BACKBONE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flop_worker:
        print(json.dumps(count_flop(args.flop_worker, args.base_channels, args.roi)))
        return
    if args.time_worker:
        print(json.dumps(measure(*args.time_worker, args.base_channels, args.roi, args.threads)))
        return
    if args.json and args.json.exists():
        raise SystemExit(f"{args.json} already exists; choose a new file name")

    results = []
    for backbone in args.backbones:
        flop = _worker(args, "--flop-worker", backbone)
        print(f"Hermes-{backbone.upper()}: {flop.get('tflop', flop.get('error'))} TFLOP per {args.roi}³ window "
              f"{flop.get('by_op_tflop', '')}", flush=True)
        for device in args.devices:
            timed = _worker(args, "--time-worker", backbone, device)
            results.append({**timed, **{"flop": flop}})
            if "error" in timed:
                print(f"  {device}: FAILED - {timed['error']}", flush=True)
                continue
            memory = f"peak host RSS {timed['peak_host_rss_gib']} GiB"
            if device == "cuda":
                memory = f"peak CUDA allocated {timed['peak_cuda_allocated_gib']} GiB, " + memory
            print(f"  {device}: {timed['parameters']:,} parameters ({timed['state_tensors']} tensors); "
                  f"{timed['seconds_per_window']} s wall, {timed['cpu_seconds_per_window']} CPU-s per window "
                  f"({timed['precision']}, {timed['device_name']}; warm-up {timed['warmup_s']} s); {memory}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
