"""How far inference-time intensity normalisation is from what the published training crops gave the same voxels.

The published arrays were cropped to the bounding box of their labelled anatomy plus a margin before the clip and
z-score (docs/README.md, "Preprocessing"); inference sees whole scans with air around the body. For
every real case of the built-in sample suite (and the synthetic PET), read on the network's grid by the inference
workflow's own preprocessing (configs/inference.json: SPL, 1.5 mm), this compares the intensities each statistics
region gives against those of a training-like crop:

- training crops (``reference``): CT ``lungs+20`` = the lungs' bounding box + 20 voxels (the chest CT's closest
  published dataset is StructSeg's thoracic OARs, whose labels span both lungs; BTCV/LiTS/CHAOS/StructSeg margin 20)
  and ``body+20`` (a crop whose labels span the whole body width); MR ``label+20`` = the case's label box + 20 voxels,
  and ``whole`` (brain structures were not cropped: colin27, and the brain-structure convention for brain1/2);
  PET ``label+128`` (autoPET kept at least 128 voxels of context);
- statistics (``statistics``): ``image`` (the whole scan: the bundle's inference before this study),
  ``body box`` (the bounding box of the body, ``scripts.data.body.body_box``: shipped for CT and MR),
  ``body mask`` (only the body's voxels), ``filled mask`` (the body's voxels with axial holes, e.g. lungs, filled);
- ``default``: what configs/inference.json's ``normalize_intensity`` gives now (body box for CT/MR, image for PET).

Columns: the normalised value of reference intensities (CT: 40, -500, 300 HU; MR/PET: the median body voxel) and
the mean absolute difference from the training crop's values over the crop's voxels.

    python bench/normalization_study.py            # CPU only, under a minute
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

BUNDLE_ROOT = Path(__file__).resolve().parents[1] / "bundle"
CT_REFERENCE_HU = (40.0, -500.0, 300.0)
#: (dataset folder, case, reference crops) of the sample suite; "label+N" = label box + N voxels, "whole" = no crop.
CASES = (
    ("sample_lung_ct", "lung1", ("lungs+20", "body+20")),
    ("sample_lung_ct", "lung2", ("lungs+20", "body+20")),
    ("sample_brain_t1", "brain1", ("label+20", "whole")),
    ("sample_brain_t1", "brain2", ("label+20", "whole")),
    ("sample_breast_mr", "breast1", ("label+20",)),
    ("sample_colin27_t1", "colin27", ("whole",)),
    ("synthetic_pet", "synthetic_pet0", ("label+128",)),
)
STATISTICS = ("image", "body box", "body mask", "filled mask")


def inference_parts(suite_registry: str):
    """(preprocessing reading image + label on the network's grid, the registry with the sample suite's datasets,
    the shipped normaliser), all from configs/inference.json."""
    from monai.bundle import ConfigParser

    os.chdir(BUNDLE_ROOT)  # bundle_root '.': run as a user does, from the bundle folder
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "inference.json"))
    parser.update({"image_keys": ["image", "label"], "interpolation": ["bilinear", "nearest"],
                   "task_registry_extra": [suite_registry]})
    return (parser.get_parsed_content("preprocessing"), parser.get_parsed_content("task_registry"),
            parser.get_parsed_content("normalize_intensity"))


def load_case(preprocessing, root: str, folder: str, case: str) -> tuple[np.ndarray, np.ndarray]:
    """Image (float64) and label (bool) of one case, spatial only, as the inference workflow resamples them."""
    files = {key: f"{root}/{folder}/{case}_{key}.nii.gz" for key in ("image", "label")}
    data = preprocessing(files)
    return data["image"][0].numpy().astype(np.float64), data["label"][0].numpy() > 0


def box_mask(mask: np.ndarray, margin: int = 0) -> np.ndarray:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped to the image), as a mask."""
    found = np.argwhere(mask)
    start, stop = np.maximum(found.min(0) - margin, 0), np.minimum(found.max(0) + 1 + margin, mask.shape)
    out = np.zeros(mask.shape, bool)
    out[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return out


def body_mask(image: np.ndarray, is_ct: bool) -> np.ndarray:
    """The body's voxels, exactly those whose bounding box ``statistics="body"`` uses (every case here has a body)."""
    import torch

    from scripts.data.body import body_mask as shipped_body_mask

    return shipped_body_mask(torch.as_tensor(image[None]), is_ct)


def filled_axially(mask: np.ndarray) -> np.ndarray:
    """``mask`` with each axial slice's holes filled (axis 0 is S in SPL)."""
    return np.stack([ndimage.binary_fill_holes(s) for s in mask])


def lungs(image: np.ndarray) -> np.ndarray:
    """Air inside the body (lungs and airways): components of at least 5 % of the largest one."""
    body = body_mask(image, True)
    labels, count = ndimage.label(filled_axially(body) & ~body)
    sizes = np.bincount(labels.ravel())[1:]
    return np.isin(labels, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))


def reference_crop(name: str, image: np.ndarray, label: np.ndarray, is_ct: bool) -> np.ndarray:
    """The training-like crop ``name`` ("whole", or "<lungs|body|label>+<margin voxels>") as a mask."""
    if name == "whole":
        return np.ones(image.shape, bool)
    kind, margin = name.split("+")
    anatomy = {"lungs": lambda: lungs(image), "body": lambda: body_mask(image, is_ct), "label": lambda: label}[kind]()
    return box_mask(anatomy, int(margin))


def statistics_of(image: np.ndarray, region: np.ndarray, is_ct: bool) -> tuple[float, float, float, float]:
    """(low, high, mean, std) of the published formula with its clip bounds and moments taken over ``region``."""
    from scripts.data.transforms import CT_CLIP_RANGE, MR_PET_PERCENTILES

    values = image[region]
    low, high = CT_CLIP_RANGE if is_ct else tuple(np.percentile(values, MR_PET_PERCENTILES))
    clipped = np.clip(values, low, high)
    return low, high, float(clipped.mean()), float(clipped.std())


def apply(values: np.ndarray, stats: tuple[float, float, float, float]) -> np.ndarray:
    """The published map with the given statistics: clip, subtract the mean, divide by the std (unless 0)."""
    low, high, mean, std = stats
    return (np.clip(values, low, high) - mean) / (std if std > 0 else 1.0)


def study_case(image: np.ndarray, label: np.ndarray, modality: int, references, normalizer, ct_index: int) -> list:
    """Rows (reference, statistics, crop share, reference-value mapping, mean |difference| in the crop)."""
    import torch

    is_ct = modality == ct_index
    body = body_mask(image, is_ct)
    regions = {"image": np.ones(image.shape, bool), "body box": box_mask(body), "body mask": body,
               "filled mask": filled_axially(body)}
    probes = np.array(CT_REFERENCE_HU if is_ct else [np.median(image[body])])
    default = normalizer.statistics_of(torch.as_tensor(image[None], dtype=torch.float32), modality)
    rows = []
    for name in references:
        crop = reference_crop(name, image, label, is_ct)
        train = statistics_of(image, crop, is_ct)
        expected = apply(image[crop], train)
        rows.append((name, "training crop", crop.mean(), apply(probes, train), 0.0))
        for statistics in STATISTICS:
            stats = statistics_of(image, regions[statistics], is_ct)
            rows.append((name, statistics, regions[statistics].mean(), apply(probes, stats),
                         float(np.abs(apply(image[crop], stats) - expected).mean())))
        rows.append((name, "default", float("nan"), apply(probes, default),
                     float(np.abs(apply(image[crop], default) - expected).mean())))
    return rows


def markdown(rows: list, is_ct: bool) -> str:
    probe_names = [f"z({v:g} HU)" for v in CT_REFERENCE_HU] if is_ct else ["z(median body voxel)"]
    lines = ["| case | training crop | statistics | share of scan | " + " | ".join(probe_names) +
             " | mean abs diff in crop |", "|" + "---|" * (5 + len(probe_names))]
    for case, name, statistics, share, mapped, diff in rows:
        share_text = "" if np.isnan(share) else f"{share:.2f}"
        values = " | ".join(f"{v:.2f}" for v in mapped)
        diff_text = "—" if statistics == "training crop" else f"{diff:.3f}"
        lines.append(f"| {case} | {name} | {statistics} | {share_text} | {values} | {diff_text} |")
    return "\n".join(lines)


def main() -> None:
    started = time.time()
    sys.path.insert(0, str(BUNDLE_ROOT))
    from scripts.sample_suite import ensure_sample_suite

    suite = ensure_sample_suite()
    root = suite["root"]
    preprocessing, registry, normalizer = inference_parts(suite["task_registry"])
    ct_index = registry.modality_index("ct")
    ct_rows, other_rows = [], []
    for folder, case, references in CASES:
        image, label = load_case(preprocessing, root, folder, case)
        modality = registry.modality_index(registry.dataset_modality(folder, None))
        rows = study_case(image, label, modality, references, normalizer, ct_index)
        (ct_rows if modality == ct_index else other_rows).extend((case, *row) for row in rows)
    print("## CT (sample_lung_ct: real chest CT, HU)\n")
    print(markdown(ct_rows, True))
    print("\n## MR and PET (real T1/breast MR; synthetic_pet0 is a synthetic phantom)\n")
    print(markdown(other_rows, False))
    print(f"\nstatistics shipped by configs/inference.json: {normalizer.statistics!r} (body box for CT/MR, whole image "
          f"for PET); {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
