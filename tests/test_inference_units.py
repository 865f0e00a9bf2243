"""Inference building blocks on their own: task choice, input collection, weights, label rule, writer safety."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.inference.errors import CaseError, SetupError, one_line
from scripts.inference.flags import as_flag
from scripts.inference.inputs import collect_cases
from scripts.inference.modality import ModalityProbe, check_modality_choice, datalist_modality
from scripts.inference.native import LabelAccumulator, label_map_from, merge_groups
from scripts.inference.network import TaskSegmenter, load_weights
from scripts.inference.task_selection import TaskGroup, TaskSelector, parse_task_request
from scripts.inference.writers import CaseWriter, task_slug
from scripts.task_registry import TaskRegistry

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return TaskRegistry.load(BUNDLE / "configs" / "task_registry.json")


# --- task selection ------------------------------------------------------------------------------------------
def test_unqualified_name_merges_every_task_of_that_modality(registry):
    (liver,) = TaskSelector(registry, "liver").resolve("ct")
    assert liver.label == 1 and liver.name == "liver"
    assert set(liver.task_ids) == {0, 9, 24}
    assert set(liver.qualified) == {"lits/liver", "amos_ct/liver", "bcv/liver"}
    # the same word on an MRI of unknown sequence takes the MRI datasets' livers (amos_mr shares amos_ct's id 9)
    (mr_liver,) = TaskSelector(registry, "liver").resolve("mr")
    assert set(mr_liver.qualified) == {"amos_mr/liver", "chaos/liver"} and set(mr_liver.task_ids) == {9, 38}
    (t1_liver,) = TaskSelector(registry, "liver").resolve("t1")
    assert t1_liver.qualified == ("chaos/liver",)


def test_qualified_names_presets_and_spelling(registry):
    groups = TaskSelector(registry, ("amos_ct/liver", "Right_Kidney")).resolve("ct")
    assert [(g.label, g.name, g.task_ids) for g in groups] == [(1, "amos_ct/liver", (9,)), (2, "right kidney", (5, 20))]
    preset = TaskSelector(registry, "kits").resolve("t2")  # a preset is taken whatever the image's modality
    assert [(g.name, g.task_ids) for g in preset] == [("kits/kidney", (2,)), ("kits/kidney tumor", (3,))]
    assert [g.task_ids[0] for g in TaskSelector(registry, "amos_ct").resolve("ct")] == list(range(4, 19))


def test_default_tasks_are_all_tasks_of_the_modality_merged_by_name(registry):
    pet = TaskSelector(registry, None).resolve("pet")
    assert [(g.name, g.task_ids) for g in pet] == [("lesion", (70,))]
    t1_names = [g.name for g in TaskSelector(registry, "all").resolve("t1")]
    assert t1_names == ["liver", "right kidney", "left kidney", "spleen", "gray matter", "white matter",
                        "cerebrospinal fluid"]
    ct = TaskSelector(registry, None).resolve("ct")
    ct_ids = {i for g in ct for i in g.task_ids}
    assert ct_ids == {t.id for t in registry.tasks if t.dataset in
                      {"lits", "kits", "amos_ct", "bcv", "structseg_oar", "structseg_head_oar"}}
    assert len({g.name for g in ct}) == len(ct)  # one label per organ name


def test_unknown_and_unavailable_names_list_candidates(registry):
    with pytest.raises(SetupError, match=r"unknown task 'livr'; did you mean: liver"):
        TaskSelector(registry, "liver,livr").validate()
    with pytest.raises(SetupError, match=r"unknown task 'amos_ct/brain stem'"):
        TaskSelector(registry, "amos_ct/brain stem").validate()
    with pytest.raises(CaseError, match=r"'kidney tumor' has no task for modality 't1'; candidates: kits/kidney tumor"):
        TaskSelector(registry, "kidney tumor").resolve("t1")


def test_task_request_parsing():
    assert parse_task_request(("liver", "spleen")) == ["liver", "spleen"]  # what fire makes of liver,spleen
    assert parse_task_request(" liver , right kidney ") == ["liver", "right kidney"]
    assert parse_task_request("all") is None and parse_task_request(None) is None


def test_modality_choices(registry):
    assert check_modality_choice("CT") == "ct" and check_modality_choice(None) == "auto"
    with pytest.raises(SetupError, match=r"--modality: unknown modality 'xray'; choose one of auto, ct, pet"):
        check_modality_choice("xray")
    assert datalist_modality(registry, "t1_in", "chaos") == "t1"
    with pytest.raises(CaseError, match="nor a sequence of dataset 'chaos'"):
        datalist_modality(registry, "flair", "chaos")


def test_modality_probe_reads_the_network_head():
    class HeadOnly(torch.nn.Module):
        def forward(self, image, task_index, modality_index):
            self.seen = (tuple(image.shape), task_index.tolist(), modality_index.tolist(), float(image.mean()))
            return None, torch.tensor([[0.0, 0.1, 3.0, 0.2, 0.0, 0.5]])

    net = HeadOnly()
    probe = ModalityProbe(net, lambda d: {**d, "image": d["image"] - d["image"].mean()}, [32, 32, 32])
    assert probe(torch.rand(1, 40, 20, 33)) == "t1"
    assert net.seen[:3] == ((1, 1, 32, 32, 32), [[-1]], [-1])  # null task, unknown-MRI prior, one centred window


# --- inputs --------------------------------------------------------------------------------------------------
def _nifti(path: Path, shape=(8, 8, 8)) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), path)
    return path


def test_collect_cases_from_folder_and_datalist(tmp_path):
    (tmp_path / "a").mkdir()
    _nifti(tmp_path / "a" / "case.nii.gz")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "b").mkdir()
    _nifti(tmp_path / "b" / "case.nii")
    found = collect_cases(tmp_path / "a")
    assert [c["name"] for c in found.cases] == ["case"] and not found.problems
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"testing": [{"image": "a/case.nii.gz", "modality": "ct"}, {"image": "b/case.nii"},
                                                {"image": "missing.nii.gz"}, {"image": "a/notes.txt"}]}))
    found = collect_cases(datalist)
    assert [c["name"] for c in found.cases] == ["a_case", "b_case"]  # same stem twice: the folder tells them apart
    assert found.cases[0]["modality"] == "ct" and found.cases[0]["format"] == "nifti"
    problems = dict(found.problems)
    assert problems[str(tmp_path / "missing.nii.gz")] == "no such file or folder"
    assert problems[str(tmp_path / "a" / "notes.txt")].startswith("unsupported file type")


def test_collect_cases_problems(tmp_path):
    assert collect_cases(tmp_path / "nope.nii.gz").problems == [(str(tmp_path / "nope.nii.gz"), "no such file or folder")]
    assert "no NIfTI" in collect_cases(tmp_path).problems[0][1]
    (tmp_path / "slice.dcm").write_bytes(b"\0" * 200)
    assert "single DICOM file" in collect_cases(tmp_path / "slice.dcm").problems[0][1]
    assert "no input given" in collect_cases(None).problems[0][1]


# --- weights -------------------------------------------------------------------------------------------------
def test_load_weights_messages_and_hash(tmp_path):
    net = torch.nn.Linear(2, 3)
    with pytest.raises(SetupError) as missing:
        load_weights(net, tmp_path / "model.pt")
    text = str(missing.value)
    assert "no model weights at" in text and "python -m monai.bundle run training" in text
    assert "python -m scripts.convert_checkpoint SRC models/model.pt" in text
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, tmp_path / "full.pt")
    with pytest.raises(SetupError, match="expected a plain state dict"):
        load_weights(net, tmp_path / "full.pt")
    torch.save(torch.nn.Linear(2, 4).state_dict(), tmp_path / "other.pt")
    with pytest.raises(SetupError, match="weights do not fit the configured network"):
        load_weights(net, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SetupError, match="junk.pt: not a PyTorch checkpoint"):
        load_weights(net, tmp_path / "junk.pt")
    source = torch.nn.Linear(2, 3)
    torch.save(source.state_dict(), tmp_path / "ok.pt")
    assert load_weights(net, tmp_path / "ok.pt") == hashlib.sha256((tmp_path / "ok.pt").read_bytes()).hexdigest()
    assert torch.equal(net.weight, source.weight)


# --- label rule, merging, writer -----------------------------------------------------------------------------
def test_label_rule_chunked_equals_whole_and_first_wins_ties():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 6, 7, 8)).astype(np.float32)
    probs[1, 0, 0, 0] = probs[3, 0, 0, 0] = 0.99  # a tie: the lower label wins
    probs[:, 1, 1, 1] = 0.5  # exactly at the threshold is not above it
    whole = label_map_from(probs, 0.5)
    expected = np.where(probs.max(0) > 0.5, probs.argmax(0) + 1, 0)
    assert np.array_equal(whole, expected) and whole[0, 0, 0] == 2 and whole[1, 1, 1] == 0
    acc = LabelAccumulator(probs.shape[1:], 0.5, 5)
    for start in range(0, 5, 2):
        acc.add(start, probs[start : start + 2])
    assert np.array_equal(acc.labels, whole)


def test_merge_groups_averages_each_groups_tasks():
    probs = torch.stack([torch.full((2, 2, 2), v) for v in (0.2, 0.4, 0.9)])
    groups = [TaskGroup(1, "liver", (9, 0), ("amos_ct/liver", "lits/liver")), TaskGroup(2, "spleen", (4,), ("x",))]
    merged = merge_groups(probs, [0, 9, 4], groups)
    assert torch.allclose(merged[0], torch.full((2, 2, 2), 0.3)) and torch.allclose(merged[1], torch.full((2, 2, 2), 0.9))


def test_writer_names_and_never_overwrites(tmp_path):
    writer = CaseWriter(tmp_path, overwrite="false", save_task_masks="true", save_probabilities=False)
    groups = [TaskGroup(1, "right kidney", (5,), ()), TaskGroup(2, "amos_ct/liver", (9,), ())]
    paths = writer.paths("case", groups)
    assert [p.name for p in paths.all()] == ["case_seg.nii.gz", "case_seg.json", "case_task-right-kidney.nii.gz",
                                             "case_task-amos_ct-liver.nii.gz"]
    writer.check_free("case.nii.gz", paths)
    paths.masks[2].write_text("a user's file")
    with pytest.raises(CaseError, match=r"case.nii.gz: output .*case_task-amos_ct-liver.nii.gz already exists; "
                                        r"pass --overwrite"):
        writer.check_free("case.nii.gz", paths)
    CaseWriter(tmp_path, overwrite=True).check_free("case.nii.gz", paths)
    assert task_slug("Left optic nerve") == "left-optic-nerve"


def test_flags_and_one_line_errors():
    assert as_flag("true") and not as_flag("false") and as_flag(True) and not as_flag(None) and as_flag(1)
    with pytest.raises(SetupError, match="--overwrite: expected true or false"):
        as_flag("maybe", "overwrite")
    try:
        try:
            raise CaseError("x.nii: image is 2D")
        except CaseError as inner:
            raise RuntimeError("applying transform <CheckImaged>\nlong trace") from inner
    except RuntimeError as outer:
        assert one_line(outer) == "x.nii: image is 2D"
    assert one_line(EOFError("Compressed file ended\nmore")) == "EOFError: Compressed file ended"


def test_inference_config_has_every_infer_property():
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer",
                              meta_file=str(BUNDLE / "configs" / "metadata.json"), bundle_root=str(BUNDLE))
    workflow.initialize()
    assert workflow.check_properties() == []


def test_task_segmenter_passes_indices_and_returns_probabilities():
    class Recorder(torch.nn.Module):
        def forward(self, image, task_index, modality_index, return_modality_logits=True):
            self.seen = (image.dtype, task_index.tolist(), modality_index.tolist(), return_modality_logits)
            return image.float().repeat(1, task_index.shape[1], 1, 1, 1) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)

    net = Recorder()
    image = torch.linspace(-3, 3, 16 ** 3).view(1, 1, 16, 16, 16)
    probs = TaskSegmenter(net)(image.half(), torch.tensor([[9, 0]]), torch.tensor([0]))
    assert net.seen == (torch.float32, [[9, 0]], [0], False)  # the network always sees float32
    assert probs.dtype == torch.float16  # stitched in the input's precision
    torch.testing.assert_close(probs.float(), torch.sigmoid(torch.cat([image, -image], 1)), atol=1e-3, rtol=0)


def test_modality_precedence_and_dicom_tags(registry):
    from scripts.inference.transforms import ResolveModalityd

    def chosen(requested="auto", **data):
        return ResolveModalityd(requested=requested, registry=registry, probe=lambda image: "t2").choose(
            {"image": None, "source": "scan", **data})

    assert chosen(dicom_modality="MR") == ("mr", "DICOM Modality tag MR")
    assert chosen(dicom_modality="PT") == ("pet", "DICOM Modality tag PT")
    assert chosen("ct", dicom_modality="MR") == ("ct", "--modality")  # the user's word wins
    assert chosen(modality="t1_out", dataset="chaos", dicom_modality="CT") == ("t1", "datalist")
    assert chosen() == ("t2", "network modality head")
    with pytest.raises(CaseError, match="scan: DICOM Modality 'US' is not one the model knows"):
        chosen(dicom_modality="US")
