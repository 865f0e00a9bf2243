"""Training-step benchmark of the workflow in bundle/configs/train.json (not a test).

Builds the network, HermesLoss, Lamb, the warm-up + poly schedule, EMA and HermesPrepareBatch from train.json (so the numbers follow
the config) and runs MONAI's SupervisedTrainer on synthetic in-memory batches (no data loading is timed):
- CUDA: 128^3 patches, batch 2, bf16 autocast (the release setting per GPU); skipped with a message without a GPU;
- CPU: a small setting (default 32^3, batch 2, base width 8, and 64^3 at the release width 32).
Prints iterations/s and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: growth of the process peak RSS).

Run from the repository root:  python bench/bench_train.py [--cpu-only | --cuda-only] [--iterations N]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))


def synthetic_batches(count: int, batch: int, size: int, tasks: int, dataset: str, seed: int = 0) -> list[dict]:
    """Batches shaped like pad_tasks_collate output: image, per-task binary labels (spheres), task/modality ids."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    batches = []
    for _ in range(count):
        label = torch.zeros(batch, tasks, size, size, size, dtype=torch.uint8)
        for b in range(batch):
            for t in range(tasks):
                centre = torch.rand(3, 1, 1, 1, generator=generator) * size
                radius = size * (0.05 + 0.15 * torch.rand(1, generator=generator).item())
                label[b, t] = (((grid - centre) ** 2).sum(0) <= radius**2).to(torch.uint8)
        image = torch.randn(batch, 1, size, size, size, generator=generator) + label.float().sum(1, keepdim=True)
        task_index = torch.stack([torch.randperm(71, generator=generator)[:tasks] for _ in range(batch)])
        # the collate's null column: every sample carries a -1 with an empty label channel, as published
        task_index = torch.cat([task_index, torch.full((batch, 1), -1)], dim=1)
        label = torch.cat([label, torch.zeros_like(label[:, :1])], dim=1)
        modality_index = torch.randint(0, 5, (batch,), generator=generator)
        batches.append({"image": image, "label": label, "task_index": task_index, "modality_index": modality_index,
                        "dataset": [dataset] * batch})
    return batches


def build_trainer(device: torch.device, size: int, batch: int, base_channels: int, iterations: int, tasks: int):
    import os

    from monai.bundle import ConfigParser
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler

    from scripts.training.ema import HermesEMAHandler

    os.chdir(BUNDLE)  # bundle_root '.' and the sample suite's relative paths: run as a user does
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({
        "bundle_root": str(BUNDLE), "device": f"$torch.device('{device}')", "base_channels": base_channels,
        "task_registry#datalist": None, "roi_size": [size] * 3, "batch_size": batch,
        "max_epochs": 1, "iterations_per_epoch": iterations, "warmup_epochs": 0.1, "amp": device.type == "cuda",
    })
    network = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    dataset = next(iter(parser.get_parsed_content("task_registry").datasets))  # any registry dataset: batches need one
    ema = HermesEMAHandler(network, parser.get_parsed_content("ema_model"), parser.get_parsed_content("ema_decay"))
    trainer = SupervisedTrainer(
        device=device, max_epochs=1, epoch_length=iterations,
        train_data_loader=synthetic_batches(iterations, batch, size, tasks, dataset),
        network=network, optimizer=optimizer, loss_function=parser.get_parsed_content("loss"),
        prepare_batch=parser.get_parsed_content("prepare_batch"),
        amp=device.type == "cuda", amp_kwargs={"dtype": torch.bfloat16}, decollate=False,
        train_handlers=[LrScheduleHandler(parser.get_parsed_content("lr_scheduler"), epoch_level=False, print_lr=False),
                        ema],
    )
    return trainer, sum(p.numel() for p in network.parameters())


def measure(device: torch.device, size: int, batch: int, base_channels: int, iterations: int, warmup: int,
            tasks: int) -> dict:
    from ignite.engine import Events

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer, parameters = build_trainer(device, size, batch, base_channels, warmup + iterations, tasks)
    stamps: list[float] = []

    def stamp(_engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.run()
    timed = stamps[warmup:]
    seconds = (timed[-1] - stamps[warmup - 1]) if warmup > 0 else (timed[-1] - timed[0])
    count = len(timed) if warmup > 0 else len(timed) - 1
    result = {"device": str(device), "size": size, "batch": batch, "base_channels": base_channels, "tasks": tasks,
              "parameters": parameters, "iterations_timed": count, "it_per_s": count / seconds,
              "loss": float(trainer.state.output["loss"].detach())}
    if device.type == "cuda":
        result["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["peak_rss_growth_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    return result


def report(result: dict) -> None:
    memory = (f"peak GPU memory {result['peak_gpu_mem_gib']:.2f} GiB" if "peak_gpu_mem_gib" in result
              else f"peak RSS growth {result['peak_rss_growth_mib']:.0f} MiB")
    print(f"[{result['device']}] {result['size']}^3 batch {result['batch']} base width {result['base_channels']} "
          f"({result['parameters'] / 1e6:.1f} M params, {result['tasks']} tasks/sample): "
          f"{result['it_per_s']:.3f} it/s ({1 / result['it_per_s']:.2f} s/it over {result['iterations_timed']} it), "
          f"{memory}, last loss {result['loss']:.3f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--cuda-only", action="store_true")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default 20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 3 CUDA, 1 CPU)")
    parser.add_argument("--tasks", type=int, default=15, help="task channels per sample (AMOS CT has 15)")
    parser.add_argument("--cpu-settings", default="32:2:8,64:2:32", help="size:batch:base_width list for the CPU part")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)

    if not args.cpu_only:
        if torch.cuda.is_available():
            device = torch.device("cuda:0")
            print(f"CUDA device: {torch.cuda.get_device_name(device)}", flush=True)
            report(measure(device, 128, 2, 32, args.iterations or 20, 3 if args.warmup is None else args.warmup,
                           args.tasks))
        else:
            print("CUDA part skipped: no CUDA device here (it measures 128^3, batch 2, base width 32, bf16 autocast).",
                  flush=True)
    if not args.cuda_only:
        for setting in args.cpu_settings.split(","):
            size, batch, width = (int(v) for v in setting.split(":"))
            report(measure(torch.device("cpu"), size, batch, width, args.iterations or 3,
                           1 if args.warmup is None else args.warmup, args.tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
