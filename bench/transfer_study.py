"""Learning after release on phantoms: transfer vs incremental vs scratch, and what the learned priors say.

An experiment, not a test. From ``bundle/``::

    python ../bench/transfer_study.py [--work DIR] [--base_iterations 120] [--iterations 60] [--shared task_head]
        [--incremental_lr 0.05] [--reuse_old] [--figure]

1. An "old" model is trained on ``synthetic_phantom_a`` (the organ) with ``configs/train.json``.
2. On the same new data (``synthetic_phantom_c``: synthetic_phantom_b's images annotating organ, box and marker as
   three new tasks) and the same iterations, with the same recipe:
   - transfer: ``--finetune true`` from the old weights, every parameter trains;
   - incremental: ``configs/incremental.json`` on top, only the three new task prior rows train
     (and, with ``--shared``, the named modules as well: the second mode);
   - scratch: a random network.
   Held-out Dice of the new tasks is computed here on the new data's validation cases; transfer and incremental
   measure forgetting of the old task with ``--old_datalist`` (``forgetting.json``).
3. Priors: cosine similarity (all fusion sites concatenated, ``scripts.analyze_priors``) between the old organ task
   and each new task, for the transfer and incremental models: does the new organ task (the same structure in another
   dataset) end up closer to the old organ task than the unrelated box and marker tasks?

Results go to ``--out`` (JSON; by default ``--work/transfer_study.json``, outside the repository) and are printed as
a markdown table; the transfer model's clustered task-prior heatmap is copied to
``docs/figures/prior_similarity_phantoms.png`` with ``--figure``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
sys.path.insert(0, str(BUNDLE))

TINY = ["--base_channels", "8", "--roi_size", "[32,32,32]", "--val_overlap", "0", "--sw_batch_size", "4"]
#: A phantom learning recipe: the phantoms' own grid, LAMB lr 5e-3, EMA 0.9, no random affine.
RECIPE = ["--spacing", "[1.5,1.5,1.5]", "--ema_decay", "0.9", "--affine_prob", "0"]
LEARNING_RATE = 0.005


def run(configs: list[str], *overrides: str) -> float:
    """``python -m monai.bundle run training`` from bundle/; seconds taken."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*command, *overrides], cwd=BUNDLE, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command + list(overrides))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def held_out_dice(weights: Path, datalist: str, registry_files: list[str]) -> dict[str, float]:
    """Held-out Dice per task of ``weights`` on the datalist's validation cases (each in its dataset's context)."""
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInferer
    from scripts.predict import WindowPredictor

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(
        {"datalist": datalist, "spacing": [1.5, 1.5, 1.5], "base_channels": 8, "task_registry_extra": registry_files}
    )
    registry = parser.get_parsed_content("task_registry")
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(weights, weights_only=True))
    predictor, inferer = WindowPredictor(network, amp=False), SlidingWindowInferer((32, 32, 32), 1, 0.25)
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for sample in parser.get_parsed_content("validate#dataset"):
            ids = torch.as_tensor(sample["task_index"]).reshape(-1).tolist()
            predicted = (
                inferer(
                    sample["image"][None],
                    predictor,
                    torch.tensor([ids + [-1]]),
                    torch.as_tensor(sample["modality_index"]).reshape(1),
                )[0]
                > 0.5
            )
            truth = torch.as_tensor(np.asarray(sample["label"])) > 0
            for channel, task_id in enumerate(ids):
                p, t = predicted[channel], truth[channel]
                name = registry.task_by_id(task_id).name
                totals.setdefault(name, []).append(float(2 * (p & t).sum() / max(int(p.sum() + t.sum()), 1)))
    return {name: float(np.mean(values)) for name, values in totals.items()}


def prior_similarity(weights: Path, out: Path, registry_files: list[str]) -> dict[str, float]:
    """Cosine (all sites) of the old organ task to each new task and among unrelated pairs."""
    from scripts.analyze_priors import analyze

    result = analyze(weights, out, registry_files, ["synthetic_phantom_a", "synthetic_phantom_c"])
    labels, matrix = result["labels"], result["task_all"]
    old = labels.index("synthetic_phantom_a/synthetic ellipsoid organ")
    named = {label.split("/", 1)[1]: i for i, label in enumerate(labels) if label.startswith("synthetic_phantom_c/")}
    similarity = {f"old organ ~ new {name}": float(matrix[old, i]) for name, i in named.items()}
    similarity["new box ~ new marker"] = float(matrix[named["synthetic box lesion"], named["synthetic sphere marker"]])
    return similarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/hermes_transfer_study")
    parser.add_argument("--base_iterations", type=int, default=120)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--shared", nargs="*", default=None, help="also run incremental with these modules training")
    parser.add_argument(
        "--incremental_lr",
        type=float,
        default=0.05,
        help="LAMB lr of the incremental regime (only prior rows train; 0.005 barely moves them)",
    )
    parser.add_argument("--reuse_old", action="store_true", help="keep an old model already in --work/models")
    parser.add_argument("--out", default=None, help="results JSON (default: --work/transfer_study.json)")
    parser.add_argument("--figure", action="store_true", help="copy the transfer model's heatmap to docs/figures")
    args = parser.parse_args()

    from scripts.sample_suite import make_increment_datalists, make_phantom_datasets

    work = Path(args.work)
    phantoms = make_phantom_datasets(work / "phantoms", n_cases=16, size=32, n_holdout=2, seed=0)
    lists = make_increment_datalists(phantoms)
    registries = [
        str(Path(lists["old"]).with_name("registry_old.json")),
        str(Path(lists["new"]).with_name("registry_new.json")),
    ]
    runs, models = work / "runs", work / "models"
    keep = args.reuse_old and (models / "old.pt").is_file()
    for name in ("transfer", "incremental", "incremental_shared", "scratch") + (() if keep else ("old",)):
        shutil.rmtree(runs / name, ignore_errors=True)
        for suffix in (".pt", ".tasks.json"):
            (models / f"{name}{suffix}").unlink(missing_ok=True)
    train = [str(BUNDLE / "configs" / "train.json")]
    incremental = train + [str(BUNDLE / "configs" / "incremental.json")]

    def common(name: str, iterations: int, learning_rate: float = LEARNING_RATE) -> list[str]:
        epochs = max(iterations // 20, 1)
        return [
            *TINY,
            *RECIPE,
            "--learning_rate",
            str(learning_rate),
            "--runs_root",
            str(runs),
            "--run_name",
            name,
            "--max_epochs",
            str(epochs),
            "--iterations_per_epoch",
            str(iterations // epochs),
            "--val_interval",
            str(epochs),
            "--export_to_bundle",
            "true",
            "--export_path",
            str(models / f"{name}.pt"),
        ]

    seconds = {"old": 0.0 if keep else run(train, "--datalist", lists["old"], *common("old", args.base_iterations))}
    base = str(models / "old.pt")
    finetune = ["--finetune", "true", "--finetune_model_path", base, "--old_datalist", lists["old"]]
    fast = args.incremental_lr
    regimes = {
        "transfer": (train, finetune, LEARNING_RATE),
        "incremental": (incremental, finetune, fast),
        "scratch": (train, [], LEARNING_RATE),
    }
    if args.shared:
        shared = ["--incremental_train_shared", json.dumps(args.shared)]
        regimes["incremental_shared"] = (incremental, [*finetune, *shared], fast)
    results: dict = {"settings": vars(args), "regimes": {}}
    results["old_model_dice"] = held_out_dice(models / "old.pt", lists["old"], registries[:1])
    for name, (configs, extra, learning_rate) in regimes.items():
        seconds[name] = run(configs, "--datalist", lists["new"], *extra, *common(name, args.iterations, learning_rate))
        entry = {
            "held_out_dice": held_out_dice(models / f"{name}.pt", lists["new"], registries),
            "seconds": seconds[name],
        }
        forgetting = runs / name / "forgetting.json"
        if forgetting.is_file():
            entry["forgetting"] = json.loads(forgetting.read_text())["mean"]
        if name != "scratch":
            entry["prior_similarity"] = prior_similarity(models / f"{name}.pt", work / "priors" / name, registries)
        results["regimes"][name] = entry
    results["seconds_old"] = seconds["old"]
    Path(args.out or work / "transfer_study.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.figure:
        figure = BUNDLE / "docs" / "figures" / "prior_similarity_phantoms.png"
        shutil.copyfile(work / "priors" / "transfer" / "task_similarity_all_clustered.png", figure)
    print(f"old model (organ, {args.base_iterations} iterations): held-out Dice {results['old_model_dice']}")
    print(
        "| regime | organ | box | marker | old organ Dice before → after | cos(old organ, new organ / box / marker) |"
    )
    print("|---|---|---|---|---|---|")
    for name, entry in results["regimes"].items():
        dice = entry["held_out_dice"]
        forget = entry.get("forgetting")
        forget_text = f"{forget['before']:.3f} → {forget['after']:.3f}" if forget else "–"
        sim = entry.get("prior_similarity", {})
        sim_text = " / ".join(f"{sim[k]:.2f}" for k in sim if k.startswith("old organ")) or "–"
        print(
            f"| {name} | {dice.get('synthetic ellipsoid organ', float('nan')):.3f} | "
            f"{dice.get('synthetic box lesion', float('nan')):.3f} | {dice.get('synthetic sphere marker', float('nan')):.3f}"
            f" | {forget_text} | {sim_text} |"
        )


if __name__ == "__main__":
    main()
