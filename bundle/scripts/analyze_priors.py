"""What the learned priors say: which tasks and which modalities a trained Hermes holds alike.

    python -m scripts.analyze_priors WEIGHTS --out DIR [--datasets A,B] [--task_registry_extra FILE ...]
        [--datalist LABELLED.json [--spacing 1.5 1.5 1.5] [--roi_size 64 64 64]]

``WEIGHTS`` is any file inference takes (the published checkpoint, a converted or exported weights file, a run
checkpoint: its EMA weights), read through ``scripts.weights``. Task names come from the registry the weights travel
with (``configs/task_registry.json`` plus the ``<stem>.tasks.json`` beside the weights, plus any extra given).

Written to ``DIR``:
- ``task_similarity_<site>.csv`` for each fusion site (``site0`` … ``site4``) and ``all`` (the five sites' rows
  concatenated): cosine similarity between the task prior rows of every registered task (the null row and unused rows
  left out), tasks ordered by dataset as in the registry;
- ``modality_similarity_<site>.csv`` / ``all``: the same for the modality priors, each modality's tokens averaged;
- ``<matrix>_by_dataset.png`` and ``<matrix>_clustered.png``: heatmaps in registry order and in the leaf order of an
  average-linkage hierarchical clustering on cosine distance (scipy);
- ``task_nearest.csv``: each task's five nearest tasks on the concatenated priors;
- ``summary.md``: what was analysed, same-name tasks of different datasets against all other pairs, the closest pairs
  across datasets, and the modality similarities;
- with ``--datalist`` (Hermes-R weights): ``posterior_similarity_all.csv|png``, the same for the posterior task tokens
  the network forms on the datalist's cases, averaged per task over all windows (``scripts.posterior_tokens``).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path

import numpy as np
import torch

from .cli import run_command
from .errors import SetupError
from .io.atomic import atomic_text
from .registry import TaskRegistry, as_path_list, companions_of
from .weights import bundle_state_dict

#: The base registry the published task ids live in.
BASE_REGISTRY = Path(__file__).resolve().parents[1] / "configs" / "task_registry.json"
#: How many nearest tasks are listed per task.
NEAREST = 5
_TABLE = re.compile(r"^fusion\.(\d+)\.(task_prior|modality_prior)$")


def prior_tables(weights: dict[str, torch.Tensor], source: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(task tables, modality tables) of the fusion sites, in site order; a file without them is refused."""
    tables: dict[str, dict[int, torch.Tensor]] = {"task_prior": {}, "modality_prior": {}}
    for name, tensor in weights.items():
        match = _TABLE.match(name)
        if match:
            tables[match[2]][int(match[1])] = tensor.detach().double()
    if not tables["task_prior"] or not tables["modality_prior"]:
        raise SetupError(
            f"{source}: holds no prior tables (no fusion.*.task_prior / modality_prior): not Hermes weights"
        )
    return [t for _, t in sorted(tables["task_prior"].items())], [
        t for _, t in sorted(tables["modality_prior"].items())
    ]


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows (float64, exactly symmetric, unit diagonal; a zero row counts as orthogonal)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    similarity = np.clip(unit @ unit.T, -1.0, 1.0)
    similarity = (similarity + similarity.T) / 2.0
    np.fill_diagonal(similarity, 1.0)
    return similarity


def task_rows(
    registry: TaskRegistry, table_rows: int, source: str, only: list[str] | None = None
) -> tuple[list[int], list[str], list[str]]:
    """(task ids, labels ``dataset/name``, first dataset) of the registered tasks the table has rows for, by dataset
    (only the datasets in ``only`` when given)."""
    if table_rows - 1 > registry.num_tasks:
        raise SetupError(
            f"{source}: its task prior tables have {table_rows - 1} task rows but the task registry knows only "
            f"{registry.num_tasks}; put the weights' task list beside them or pass --task_registry_extra"
        )
    unknown = sorted(set(only or []) - set(registry.datasets))
    if unknown:
        raise SetupError(f"--datasets: {unknown} are not datasets of the task registry ({sorted(registry.datasets)})")
    ids, labels, datasets = [], [], []
    for dataset in only or registry.datasets:
        for task in registry.tasks_of(dataset):
            if task.id in ids or task.id >= table_rows - 1:
                continue
            sharing = [d for d in registry.datasets if task.id in registry.task_ids(d)]
            ids.append(task.id)
            labels.append(f"{'+'.join(sharing)}/{task.name}")
            datasets.append(dataset)
    return ids, labels, datasets


def modality_names(registry: TaskRegistry, rows: int) -> list[str]:
    """Names of the modality rows (the last row is the one index −1 selects)."""
    by_index = {index: name for name, index in registry.modalities.items()}
    return [by_index.get(-1 if row == rows - 1 and -1 in by_index else row, f"row {row}") for row in range(rows)]


def write_matrix_csv(path: Path, labels: list[str], matrix: np.ndarray) -> None:
    lines = [",".join(["", *map(_csv_cell, labels)])]
    lines += [",".join([_csv_cell(label), *(f"{v:.6f}" for v in row)]) for label, row in zip(labels, matrix)]
    atomic_text(path, "\n".join(lines) + "\n")


def _csv_cell(text: str) -> str:
    return f'"{text}"' if any(c in text for c in ',"') else text


def cluster_order(matrix: np.ndarray) -> list[int]:
    """Leaf order of average-linkage clustering on cosine distance (1 − similarity)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(matrix) < 3:
        return list(range(len(matrix)))
    distance = np.clip(1.0 - matrix, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), method="average"))]


def write_heatmap(path: Path, labels: list[str], matrix: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.16 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ticks = range(len(labels))
    font = 7 if len(labels) <= 40 else 5
    ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels, fontsize=font)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(temporary, path)


def write_matrix(out: Path, stem: str, labels: list[str], matrix: np.ndarray, title: str) -> None:
    """CSV plus the two heatmaps of one similarity matrix."""
    write_matrix_csv(out / f"{stem}.csv", labels, matrix)
    write_heatmap(out / f"{stem}_by_dataset.png", labels, matrix, f"{title},\nordered by dataset")
    order = cluster_order(matrix)
    write_heatmap(
        out / f"{stem}_clustered.png",
        [labels[i] for i in order],
        matrix[np.ix_(order, order)],
        f"{title},\nclustered (average linkage)",
    )


def nearest_tasks(labels: list[str], matrix: np.ndarray, count: int = NEAREST) -> list[tuple[str, int, str, float]]:
    rows = []
    for i, label in enumerate(labels):
        others = [j for j in np.argsort(-matrix[i], kind="stable") if j != i][:count]
        rows += [(label, rank + 1, labels[j], float(matrix[i, j])) for rank, j in enumerate(others)]
    return rows


def _task_name(label: str) -> str:
    return label.split("/", 1)[1]


def pair_statistics(labels: list[str], datasets: list[str], matrix: np.ndarray) -> dict[str, tuple[float, int]]:
    """Mean cosine (and count) of task pairs: same name in different datasets, same dataset, all other pairs."""
    groups: dict[str, list[float]] = {"same name, different datasets": [], "same dataset": [], "other pairs": []}
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if datasets[i] != datasets[j] and _task_name(labels[i]) == _task_name(labels[j]):
                groups["same name, different datasets"].append(matrix[i, j])
            elif datasets[i] == datasets[j]:
                groups["same dataset"].append(matrix[i, j])
            else:
                groups["other pairs"].append(matrix[i, j])
    return {key: (float(np.mean(v)) if v else float("nan"), len(v)) for key, v in groups.items()}


def analyze(
    weights_path: str | os.PathLike,
    out: str | os.PathLike,
    extra_registries: list[str] = (),
    datasets: list[str] | None = None,
    datalist: str | None = None,
    spacing: list[float] | None = None,
    roi_size: list[int] | None = None,
) -> dict:
    """Write every table, figure and the summary for the weights at ``weights_path`` into ``out``; return the numbers
    the summary states (``task_all``, ``modality_all`` matrices, labels, pair statistics)."""
    source = str(weights_path)
    weights = bundle_state_dict(weights_path)
    task_tables, modality_tables = prior_tables(weights, source)
    registry = TaskRegistry.load(BASE_REGISTRY, companions_of(weights_path) + as_path_list(extra_registries))
    ids, labels, datasets = task_rows(registry, task_tables[0].shape[0], source, datasets)
    if len(ids) < 2:
        raise SetupError(f"{source}: fewer than two registered tasks have prior rows; nothing to compare")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task_vectors = [table[ids].numpy() for table in task_tables]
    modality_vectors = [table.mean(dim=1).numpy() for table in modality_tables]
    names = modality_names(registry, modality_tables[0].shape[0])
    result: dict = {"labels": labels, "datasets": datasets, "modalities": names}
    for kind, vectors, row_labels in (("task", task_vectors, labels), ("modality", modality_vectors, names)):
        for site, site_vectors in enumerate(vectors):
            write_matrix(
                out,
                f"{kind}_similarity_site{site}",
                row_labels,
                cosine_matrix(site_vectors),
                f"{kind} priors, fusion site {site}",
            )
        combined = cosine_matrix(np.concatenate(vectors, axis=1))
        write_matrix(out, f"{kind}_similarity_all", row_labels, combined, f"{kind} priors, all sites concatenated")
        result[f"{kind}_all"] = combined
    nearest = nearest_tasks(labels, result["task_all"])
    with open(out / "task_nearest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "rank", "neighbour", "cosine"])
        writer.writerows((t, r, n, f"{c:.6f}") for t, r, n, c in nearest)
    result["pairs"] = pair_statistics(labels, datasets, result["task_all"])
    if datalist:
        from .posterior_tokens import posterior_task_tokens

        registries = companions_of(weights_path) + as_path_list(extra_registries)
        tokens = posterior_task_tokens(
            weights, source, datalist, registries, spacing or [1.5] * 3, roi_size or [64] * 3
        )
        seen = [i for i, task_id in enumerate(ids) if task_id in tokens]
        if len(seen) < 2:
            raise SetupError(f"--datalist {datalist}: its cases hold fewer than two of the analysed tasks")
        vectors = np.stack([tokens[ids[i]].numpy() for i in seen])
        result["posterior_labels"] = [labels[i] for i in seen]
        result["posterior_all"] = cosine_matrix(vectors)
        write_matrix(
            out,
            "posterior_similarity_all",
            result["posterior_labels"],
            result["posterior_all"],
            "posterior task tokens on the datalist's windows",
        )
    atomic_text(out / "summary.md", summary_text(source, registry, result, len(task_tables)))
    return result


def summary_text(source: str, registry: TaskRegistry, result: dict, sites: int) -> str:
    labels, datasets, matrix = result["labels"], result["datasets"], result["task_all"]
    lines = [
        "# Learned priors",
        "",
        f"Weights: `{source}`; {len(labels)} tasks of {len(set(datasets))} datasets, {len(result['modalities'])} "
        f"modality rows, {sites} fusion sites. Cosine similarity of the task prior rows (all sites concatenated).",
        "",
        "| pairs | mean cosine | count |",
        "|---|---|---|",
    ]
    lines += [f"| {key} | {mean:.3f} | {count} |" for key, (mean, count) in result["pairs"].items()]
    across = [
        (matrix[i, j], labels[i], labels[j])
        for i in range(len(labels))
        for j in range(i + 1, len(labels))
        if datasets[i] != datasets[j]
    ]
    lines += ["", "Closest task pairs of different datasets:", ""]
    lines += [f"- {a} ↔ {b}: {value:.3f}" for value, a, b in sorted(across, reverse=True)[:10]]
    names = result["modalities"]
    lines += ["", "Modality priors (tokens averaged, all sites):", "", "| | " + " | ".join(names) + " |"]
    lines += ["|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for n, row in zip(names, result["modality_all"])]
    if "posterior_all" in result:
        post, post_labels = result["posterior_all"], result["posterior_labels"]
        lines += [
            "",
            f"Posterior task tokens (averaged over the datalist's windows) of {len(post_labels)} tasks: "
            f"mean off-diagonal cosine {post[~np.eye(len(post), dtype=bool)].mean():.3f} "
            "(`posterior_similarity_all.csv|png`).",
        ]
    lines += ["", "Files: `task_similarity_*.csv|png`, `modality_similarity_*.csv|png`, `task_nearest.csv`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.analyze_priors", description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="weights file (any format inference takes)")
    parser.add_argument("--out", required=True, help="folder for the tables, figures and summary")
    parser.add_argument("--task_registry_extra", nargs="*", default=[], help="extra task registry files")
    parser.add_argument("--datasets", default="", help="comma-separated datasets to analyse (default: all)")
    parser.add_argument("--datalist", default=None, help="also compare posterior task tokens on these labelled cases")
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="with --datalist (mm)")
    parser.add_argument("--roi_size", type=int, nargs=3, default=[64, 64, 64], help="with --datalist (voxels)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.datasets.split(",") if name.strip()] or None
    result = analyze(args.weights, args.out, args.task_registry_extra, only, args.datalist, args.spacing, args.roi_size)
    print(f"analysed {len(result['labels'])} tasks and {len(result['modalities'])} modalities -> {args.out}")
    return 0


if __name__ == "__main__":
    run_command(main)
