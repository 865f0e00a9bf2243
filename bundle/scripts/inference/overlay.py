"""A quick-look PNG: a few axial slices of the image with the label map on top (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation


def pick_slices(labels: np.ndarray, count: int = 3) -> list[int]:
    """Axial slices worth looking at: for each label, where it is largest; then slices spread through the labelled
    range (or the whole volume when nothing is labelled) until there are ``count``."""
    area = np.stack(
        [(labels == value).sum(axis=(0, 1)) for value in np.unique(labels) if value != 0]
        or [np.zeros(labels.shape[-1], dtype=int)]
    )
    chosen = [int(np.argmax(per_label)) for per_label in area if per_label.any()][:count]
    found = np.flatnonzero(area.sum(axis=0))
    low, high = (int(found[0]), int(found[-1])) if found.size else (0, labels.shape[-1] - 1)
    for value in np.linspace(low, high, count + 2)[1:-1]:
        if len(set(chosen)) >= count:
            break
        chosen.append(int(round(value)))
    return sorted(set(chosen))


def save_overlay(
    path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str = ""
) -> None:
    """``image`` and ``labels`` on one RAS grid (x, y, z); drawn anterior up, patient right on the right (neurological view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    slices = pick_slices(labels)
    colours = plt.get_cmap("tab20")(np.arange(max(1, len(names))) % 20)
    cmap = ListedColormap(np.vstack([[0, 0, 0, 0], colours]))
    low, high = np.percentile(image, [1, 99])
    fig, axes = plt.subplots(1, len(slices), figsize=(4 * len(slices), 4.4), squeeze=False)
    for ax, z in zip(axes[0], slices):
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower", vmin=low, vmax=high)
        ax.imshow(
            labels[:, :, z].T, cmap=cmap, vmin=0, vmax=len(names), origin="lower", alpha=0.45, interpolation="nearest"
        )
        ax.set_title(f"axial slice {z} (1.5 mm RAS grid)", fontsize=9)
        ax.axis("off")
    present = sorted(set(np.unique(labels[:, :, slices]).tolist()) - {0})
    legend = ", ".join(names[i - 1] for i in present[:8]) or "no label above threshold"
    fig.suptitle(f"{title}\n{legend}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_case_overlay(
    path: str | os.PathLike, image: object, label_map: np.ndarray, names: Sequence[str], title: str
) -> None:
    """The quick-look PNG of a case drawn on the network's grid (``image``, ``label_map``) turned to RAS."""
    affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4)
    to_ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)[:1])
    picture = np.asarray(to_ras(MetaTensor(pixels, affine=affine))[0], dtype=np.float32)
    view = np.asarray(to_ras(MetaTensor(torch.from_numpy(label_map)[None], affine=affine))[0])
    save_overlay(path, picture, view, names, title=title)
