"""Inference speed and peak memory of the release-size Hermes-R network (random weights).

Times what ``configs/inference.json`` does per volume once the image is preprocessed: its sliding-window inferer
(128³ windows, half overlap) over a 1.5 mm volume with its ``WindowPredictor`` (bf16 autocast on CUDA, one sigmoid
channel per task), thresholded at 0.5. Loading, resampling and writing files are not included.
The default volume (300×300×250 voxels at 1.5 mm) is an abdominal CT of AMOS size.

What runs in each window (``--selection``):
- ``ct-default``: the default task selection on a CT, as inference runs it: every CT dataset's full task list plus a
  null token, one pass per dataset (6 passes, 60 tasks + 6 nulls);
- ``ct-union``: the same 60 tasks in ONE pass without a null token (what the bundle did before task contexts; the
  published model never saw such a pass, so it is only a speed reference);
- ``amos``: one dataset (AMOS CT, 15 tasks + null), one pass.

    python bench/bench_inference.py                       # CUDA (bf16 autocast) then CPU (fp32), default volume
    python bench/bench_inference.py --devices cpu --size 128 128 128 --repeats 1 --selection ct-default ct-union
    python bench/bench_inference.py --json results.json   # also write the numbers

Each measurement runs in its own subprocess so that the CPU peak RSS (``resource.getrusage``) and the CUDA peak
(``torch.cuda.max_memory_allocated``) belong to that measurement alone. Without a GPU the CUDA part prints a skip.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "bundle"
DEFAULT_SIZE = (300, 300, 250)


def _build_inferer(roi: int, overlap: float, sw_batch_size: int):
    """The sliding-window inferer exactly as configs/inference.json declares it, with the given window settings."""
    import os

    from monai.bundle import ConfigParser

    os.chdir(BUNDLE_ROOT)  # bundle_root '.': run as a user does, from the bundle folder
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.json"))
    parser.update({"roi_size": [roi] * 3, "overlap": overlap, "sw_batch_size": sw_batch_size})
    return parser.get_parsed_content("inferer")


def window_count(size: tuple[int, int, int], roi: int, overlap: float) -> int:
    """Windows the sliding-window inferer runs over a volume of ``size`` (MONAI's scan: step roi*(1-overlap))."""
    step = max(1, int(roi * (1 - overlap)))
    count = 1
    for s in size:
        count *= 1 if s <= roi else math.ceil((s - roi) / step) + 1
    return count


def selection_tokens(selection: str) -> "torch.Tensor":
    """The task-token rows each window runs for ``selection`` (see the module docstring)."""
    import torch

    from scripts.inference.task_selection import TaskSelector, contexts_of
    from scripts.predict import context_tensor, dataset_contexts
    from scripts.registry import TaskRegistry

    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json")
    if selection == "amos":
        return context_tensor(dataset_contexts(registry, ["amos_ct"]))
    contexts = contexts_of(TaskSelector(registry, None).resolve("ct"), registry)
    if selection == "ct-union":
        return torch.tensor([[t for c in contexts for t in dict.fromkeys(c.task_ids)]])
    return context_tensor(contexts)


def measure(device: str, size: tuple[int, int, int], selection: str, repeats: int, roi: int, overlap: float,
            sw_batch_size: int, base_channels: int, threads: int | None) -> dict:
    """Time ``repeats`` volumes after one warm-up volume; returns seconds per volume and the peak memory."""
    import torch

    sys.path.insert(0, str(BUNDLE_ROOT))
    from scripts.networks.hermes import HermesResUNet
    from scripts.predict import WindowPredictor

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = HermesResUNet(in_channels=1, base_channels=base_channels, num_tasks=72, num_modalities=6).to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    inferer = _build_inferer(roi, overlap, sw_batch_size)
    image = torch.randn(1, 1, *size, device=device)
    task_index = selection_tokens(selection).to(device)
    passes = task_index.shape[0]
    tasks = int((task_index >= 0).sum())
    modality_index = torch.zeros(1, dtype=torch.long, device=device)

    segmenter = WindowPredictor(net, amp=True)  # the inference window adapter: bf16 autocast on CUDA, sigmoid per task

    def one_volume() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            mask = inferer(image, segmenter, task_index, modality_index) > 0.5
        if device == "cuda":
            torch.cuda.synchronize()
        assert mask.shape == (1, tasks, *size)
        return time.perf_counter() - start

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = one_volume()
    times = [one_volume() for _ in range(repeats)]
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda"
        else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)",
        "precision": "bf16 autocast" if device == "cuda" else "fp32",
        "volume_voxels": list(size),
        "selection": selection,
        "tasks": tasks,
        "passes_per_window": passes,
        "roi": roi,
        "windows": window_count(size, roi, overlap),
        "overlap": overlap,
        "base_channels": base_channels,
        "parameters": params,
        "warmup_s": round(warmup, 3),
        "seconds_per_volume": round(min(times), 3) if times else round(warmup, 3),
        "all_times_s": [round(t, 3) for t in times],
        # ru_maxrss is in KiB on Linux
        "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if device == "cuda":
        result["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


def _run_in_subprocess(args: argparse.Namespace, device: str, selection: str) -> dict:
    command = [sys.executable, __file__, "--worker", device, "--size", *map(str, args.size), "--selection", selection,
               "--repeats", str(args.repeats), "--roi", str(args.roi), "--overlap", str(args.overlap),
               "--sw-batch-size", str(args.sw_batch_size), "--base-channels", str(args.base_channels)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"device": device, "error": completed.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"], choices=["cuda", "cpu"])
    parser.add_argument("--size", nargs=3, type=int, default=list(DEFAULT_SIZE), metavar=("D", "H", "W"),
                        help="preprocessed volume in voxels at 1.5 mm (default: %(default)s)")
    parser.add_argument("--selection", nargs="+", default=["ct-default", "ct-union"],
                        choices=["ct-default", "ct-union", "amos"], help="what each window runs (module docstring)")
    parser.add_argument("--repeats", type=int, default=2, help="timed volumes after one warm-up volume")
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=32, help="32 is the release network (60.9 M parameters)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this new JSON file")
    parser.add_argument("--worker", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(measure(args.worker, tuple(args.size), args.selection[0], args.repeats, args.roi, args.overlap,
                                 args.sw_batch_size, args.base_channels, args.threads)))
        return

    import torch

    if args.json and args.json.exists():
        raise SystemExit(f"{args.json} already exists; choose a new file name")
    results = []
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: SKIPPED - no CUDA device visible to torch "
                  f"(torch {torch.__version__}, CUDA build {torch.version.cuda})", flush=True)
            results.append({"device": "cuda", "skipped": "no CUDA device"})
            continue
        for selection in args.selection:
            print(f"{device}: measuring {args.size} voxels, selection {selection}, roi {args.roi}, "
                  f"overlap {args.overlap}, base {args.base_channels} ...", flush=True)
            result = _run_in_subprocess(args, device, selection)
            results.append(result)
            if "error" in result:
                print(f"{device}: FAILED - {result['error']}", flush=True)
                continue
            memory = f"peak host RSS {result['peak_host_rss_gib']} GiB"
            if device == "cuda":
                memory = f"peak CUDA allocated {result['peak_cuda_allocated_gib']} GiB, " + memory
            print(f"{device} {selection}: {result['seconds_per_volume']} s/volume ({result['windows']} windows x "
                  f"{result['passes_per_window']} pass(es), {result['tasks']} tasks; {result['precision']}, "
                  f"{result['device_name']}; warm-up {result['warmup_s']} s), {memory}", flush=True)
        timed = {r["selection"]: r["seconds_per_volume"] for r in results if r.get("device") == device and "selection" in r}
        if "ct-default" in timed and "ct-union" in timed:
            print(f"{device}: task contexts cost {timed['ct-default'] / timed['ct-union']:.2f}x the single union pass",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")



if __name__ == "__main__":
    main()
