"""One 128^3 window through the inference path's WindowPredictor under each speed setting, beside the plain
network forward (the published window's stand-in, see bench_end_to_end.py) measured in the same run.

Settings: ``plain`` (network forward, one AMOS CT context, no autotuning), ``predictor`` (WindowPredictor, same
context), ``+cudnn`` (cuDNN autotuning), ``+channels_last``, ``+compile`` (torch.compile), and the default CT
selection's 6 contexts sharing the image trunk. Each result also gives the largest probability difference to
``plain`` (the speed settings must not change what is computed beyond bf16 rounding).

    python bench/bench_window.py --device cuda [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

from scripts.inference.task_selection import TaskSelector, contexts_of  # noqa: E402
from scripts.networks.hermes import HermesResUNet  # noqa: E402
from scripts.predict import WindowPredictor, context_tensor, dataset_contexts  # noqa: E402
from scripts.registry import TaskRegistry  # noqa: E402


def timed(call, device: str, repeats: int) -> tuple[float, torch.Tensor]:
    out = None
    times = []
    for k in range(repeats + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        with torch.no_grad():
            out = call()
        if device == "cuda":
            torch.cuda.synchronize()
        if k >= 3:
            times.append(time.perf_counter() - began)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 2], help="windows per call (sw_batch_size)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = args.device
    registry = TaskRegistry.load(str(BUNDLE / "configs" / "task_registry.json"))
    amos = dataset_contexts(registry, ["amos_ct"])
    ct_default = contexts_of(TaskSelector(registry).resolve("ct"), registry)
    torch.manual_seed(0)
    net = HermesResUNet(base_channels=args.base_channels, num_tasks=72).to(device).eval()
    modality = torch.zeros(1, dtype=torch.long, device=device)
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
               "runs": []}
    amp = device == "cuda"
    for batch in args.batch:
        window = torch.randn(batch, 1, *(args.roi,) * 3, device=device)
        tokens = torch.tensor([amos[0].tokens] * batch, device=device)
        torch.backends.cudnn.benchmark = False
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            plain_s, plain = timed(lambda: net(window, tokens, modality.expand(batch), return_modality_logits=False),
                                   device, args.repeats)
        plain = torch.sigmoid(plain.float())[:, :-1]
        rows = [("plain network forward", plain_s, 0.0)]
        settings = [("predictor", {}, False), ("+cudnn", {}, True), ("+channels_last", {"channels_last": True}, True)]
        if args.compile and device == "cuda":
            settings.append(("+compile", {"channels_last": True, "compile": True}, True))
        for name, options, autotune in settings:
            torch.backends.cudnn.benchmark = autotune
            predictor = WindowPredictor(net, amp=amp, **options)
            seconds, out = timed(lambda: predictor(window, context_tensor(amos), modality), device, args.repeats)
            rows.append((name, seconds, float((out.float() - plain).abs().max())))
            net.to(memory_format=torch.contiguous_format)
        predictor = WindowPredictor(net, amp=amp, channels_last=device == "cuda")
        seconds, _ = timed(lambda: predictor(window, context_tensor(ct_default), modality), device, args.repeats)
        rows.append((f"CT default: {len(ct_default)} contexts, shared trunk, +cudnn +channels_last", seconds, float("nan")))
        net.to(memory_format=torch.contiguous_format)
        for name, seconds, diff in rows:
            entry = {"windows_per_call": batch, "setting": name, "ms_per_window": round(1000 * seconds / batch, 2),
                     "ratio_to_plain": round(seconds / plain_s, 3), "max_prob_diff_to_plain": diff}
            results["runs"].append(entry)
            print(json.dumps(entry), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
