"""``python -m scripts.analyze_priors`` on a bundle-trained model and on the published-format reference file, and a new
modality end to end: a datalist whose registry adds one grows the modality tables, and inference accepts it after.

One short training run for the module (two iterations, base 8): synthetic_phantom_b's images annotating three
structures, declared as a new modality ``synthetic_us``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BUNDLE_ROOT
from conftest import run_workflow_in_process
from test_training import TINY

NEW_MODALITY = "synthetic_us"


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.analyze_priors", *args], cwd=BUNDLE_ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def read_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0][1:], np.array([[float(v) for v in row[1:]] for row in rows[1:]])


def check_matrices(out: Path, tasks: int, modalities: int) -> None:
    for kind, size in (("task", tasks), ("modality", modalities)):
        for stem in [f"{kind}_similarity_site{i}" for i in range(5)] + [f"{kind}_similarity_all"]:
            labels, matrix = read_matrix(out / f"{stem}.csv")
            assert matrix.shape == (size, size) and len(labels) == size, stem
            np.testing.assert_array_equal(matrix, matrix.T)
            np.testing.assert_array_equal(np.diag(matrix), np.ones(size))
            assert np.all(np.abs(matrix) <= 1.0)
            for order in ("by_dataset", "clustered"):
                assert (out / f"{stem}_{order}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "summary.md").read_text().startswith("# Learned priors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Two iterations on a datalist whose registry adds the modality ``synthetic_us``, exported with its task list."""
    from scripts.sample_suite import make_increment_datalists, make_phantom_datasets

    root = tmp_path_factory.mktemp("priors")
    lists = make_increment_datalists(make_phantom_datasets(root / "phantoms", n_cases=2, size=32, n_holdout=1))
    new = Path(lists["new"])
    registry = json.loads(new.with_name("registry_new.json").read_text())
    registry["modalities"] = {NEW_MODALITY: 5}
    registry["datasets"]["synthetic_phantom_c"]["modality"] = NEW_MODALITY
    new.with_name("registry_us.json").write_text(json.dumps(registry))
    datalist = json.loads(new.read_text())
    datalist["task_registry"] = "registry_us.json"
    new.with_name("us.json").write_text(json.dumps(datalist))
    weights = root / "models" / "model.pt"
    run_workflow_in_process("training", "--datalist", new.with_name("us.json"), "--runs_root", root / "runs",
                            "--run_name", "us", *TINY, "--spacing", "[1.5,1.5,1.5]", "--max_epochs", "1",
                            "--iterations_per_epoch", "2", "--export_to_bundle", "true", "--export_path", weights,
                            expect_ok=True)
    return {"root": root, "weights": weights, "image": new.parent / datalist["validation"][0]["image"],
            "datalist": new.with_name("us.json")}


def test_a_new_modality_grows_the_tables_and_inference_accepts_it(trained: dict, tmp_path: Path) -> None:
    from scripts.registry import TaskRegistry

    weights = torch.load(trained["weights"], weights_only=True)
    assert weights["fusion.0.modality_prior"].shape[0] == 7 and weights["modality_head.mlp.fc2.weight"].shape[0] == 7
    companion = json.loads(trained["weights"].with_name("model.tasks.json").read_text())
    assert companion["modalities"][NEW_MODALITY] == 5
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json", [trained["weights"].with_name(
        "model.tasks.json")])
    assert registry.modality_name(5) == NEW_MODALITY and registry.modality_name(-1) == "mr"
    run_workflow_in_process("inference", "--input", trained["image"], "--output_dir", tmp_path / "out", "--ckpt_path",
                            trained["weights"], "--base_channels", "8", "--roi_size", "[32,32,32]", "--modality",
                            NEW_MODALITY, "--tasks", "synthetic box lesion", expect_ok=True)
    sidecars = list((tmp_path / "out").glob("*.json"))
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["modality"]["name"] == NEW_MODALITY


def test_analyze_priors_on_a_bundle_trained_model(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    done = analyze(str(trained["weights"]), "--out", str(out), "--datasets", "synthetic_phantom_c", "--datalist",
                   str(trained["datalist"]), "--roi_size", "32", "32", "32")
    assert done.returncode == 0, done.stderr[-3000:]
    check_matrices(out, tasks=3, modalities=7)
    labels, posterior = read_matrix(out / "posterior_similarity_all.csv")  # tokens the network formed on the cases
    assert len(labels) == 3 and np.array_equal(posterior, posterior.T) and np.array_equal(np.diag(posterior), np.ones(3))
    _, priors = read_matrix(out / "task_similarity_all.csv")
    assert not np.allclose(posterior, priors, atol=1e-3), "posterior tokens read the image; they are not the priors"
    assert "Posterior task tokens (averaged over the datalist's windows) of 3 tasks" in (out / "summary.md").read_text()
    labels, _ = read_matrix(out / "modality_similarity_all.csv")
    assert labels == ["ct", "pet", "t1", "t2", "cine", NEW_MODALITY, "mr"]
    labels, _ = read_matrix(out / "task_similarity_all.csv")
    assert labels == [f"synthetic_phantom_c/synthetic {n}" for n in ("ellipsoid organ", "box lesion", "sphere marker")]
    with open(out / "task_nearest.csv", newline="", encoding="utf-8") as handle:
        nearest = list(csv.DictReader(handle))
    assert len(nearest) == 3 * 2 and {row["rank"] for row in nearest} == {"1", "2"}


def test_analyze_priors_on_the_published_format(shared_fixtures: Path, tmp_path: Path) -> None:
    source = shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"
    out = tmp_path / "published"
    done = analyze(str(source), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    check_matrices(out, tasks=9, modalities=4)  # ids 0-8 of the published registry; ct, pet, t1 and the -1 row
    from scripts.registry import TaskRegistry

    labels, matrix = read_matrix(out / "task_similarity_all.csv")
    assert labels[:2] == ["lits/liver", "lits/liver tumor"] and labels[4] == "amos_ct+amos_mr/spleen"
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json")
    first = [(label.split("/")[0].split("+")[0], label.split("/", 1)[1]) for label in labels]  # (dataset, task name)
    ids = [next(t.id for t in registry.tasks if (t.dataset, t.name) == pair) for pair in first]
    published = torch.load(source, weights_only=True)["ema_model_state_dict"]
    rows = torch.cat([published[f"{site}.task_prior"][ids].double() for site in
                      ("prior_init_fuse_2", "prior_init_fuse_3", "prior_init_fuse_4", "prior_fuse_5", "prior_fuse_6")], 1)
    expected = torch.nn.functional.cosine_similarity(rows[:, None], rows[None], dim=2).numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-6)


def test_analyze_priors_refuses_a_file_without_prior_tables(tmp_path: Path) -> None:
    bogus = tmp_path / "plain.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, bogus)
    done = analyze(str(bogus), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {bogus}: holds no prior tables (no fusion.*.task_prior / "
                                                "modality_prior): not Hermes weights"]
    assert not (tmp_path / "out").exists()
