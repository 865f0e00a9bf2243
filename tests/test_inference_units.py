"""Inference building blocks on their own: task choice, input collection, weights, label rule, writer safety."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.case_engine import AlreadyComplete
from scripts.errors import CaseError, SetupError
from scripts.inference.inputs import collect_cases
from scripts.inference.modality import ModalityStep
from scripts.cases.labels import LabelMap, label_map_from
from scripts.inference.task_selection import TaskGroup, TaskSelector, contexts_of, merge_groups, parse_task_request
from scripts.cases.write import CaseWriter
from scripts.networks.hermes import HermesResUNet
from scripts.predict import ABSENT, TaskContext, WindowPredictor, channel_layout, context_tensor
from scripts.registry import Task, TaskRegistry, slug

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


REGISTRY = TaskRegistry.load(BUNDLE / "configs" / "task_registry.json")


@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return REGISTRY


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


def test_default_tasks_cover_every_structure_of_the_modality_with_few_passes(registry):
    pet = TaskSelector(registry, None).resolve("pet")
    assert [(g.name, g.task_ids) for g in pet] == [("lesion", (70,))]
    t1 = TaskSelector(registry, "all").resolve("t1")
    assert [g.name for g in t1] == ["liver", "right kidney", "left kidney", "spleen", "gray matter", "white matter",
                                    "cerebrospinal fluid"]
    assert [c.dataset for c in contexts_of(t1, registry)] == ["chaos", "brain_structure"]
    ct = TaskSelector(registry, None).resolve("ct")
    every_ct_name = {t.name for t in registry.tasks if t.dataset in
                     {"lits", "kits", "amos_ct", "bcv", "structseg_oar", "structseg_head_oar"}}
    assert {g.name for g in ct} == every_ct_name and len(ct) == len(every_ct_name)  # one label per structure
    assert len(contexts_of(ct, registry)) == 6  # every CT dataset adds a structure (e.g. bcv the portal vein)
    # an MRI of unknown sequence: AMOS MRI, M&Ms and brain structures name everything CHAOS names and more
    mr = TaskSelector(registry, None).resolve("mr")
    assert [c.dataset for c in contexts_of(mr, registry)] == ["amos_mr", "mnm", "brain_structure"]
    (liver,) = [g for g in mr if g.name == "liver"]
    assert liver.qualified == ("amos_mr/liver",)


def test_a_subset_of_tasks_runs_each_dataset_s_full_context(registry):
    groups = TaskSelector(registry, "liver").resolve("ct")
    contexts = contexts_of(groups, registry)
    assert [(c.dataset, c.tokens) for c in contexts] == [
        ("lits", (0, 1, -1)), ("amos_ct", (*range(4, 19), -1)), ("bcv", (*range(19, 32), -1))]
    layout = channel_layout(contexts)
    assert len(layout) == 2 + 15 + 13 and layout[("amos_ct", 9)] == 2 + 5 and layout[("bcv", 24)] == 17 + 5
    assert context_tensor(contexts).tolist()[0] == [0, 1, -1] + [ABSENT] * 13  # padded to amos_ct's 16 tokens


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
    assert registry.parse_modality_choice("CT") == "ct" and registry.parse_modality_choice(None) == "auto"
    with pytest.raises(SetupError, match=r"--modality: unknown modality 'xray'; choose one of auto, ct, pet"):
        registry.parse_modality_choice("xray")
    assert registry.item_modality("t1_in", "chaos") == "t1"
    with pytest.raises(KeyError, match="nor a sequence of dataset 'chaos'"):
        registry.item_modality("flair", "chaos")


def test_modality_probe_reads_the_network_head(registry):
    class HeadOnly(torch.nn.Module):
        def forward(self, image, task_index, modality_index, return_modality_logits=True):
            self.seen = (tuple(image.shape), task_index.tolist(), modality_index.tolist(), float(image.mean()))
            return None, torch.tensor([[0.0, 0.1, 3.0, 0.2, 0.0, 0.5]])

    net = HeadOnly()
    step = ModalityStep(registry, "auto", WindowPredictor(net), lambda d: {**d, "image": d["image"] - d["image"].mean()},
                        [32, 32, 32])
    assert step({"image": torch.rand(1, 40, 20, 33), "source": "scan"}) == ("t1", "network modality head")
    assert net.seen[:3] == ((1, 1, 32, 32, 32), [[-1]], [-1])  # null task, unknown-MRI prior, one centred window
    net_says_last = HeadOnly()
    net_says_last.forward = lambda *a, **k: (None, torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 9.0]]))
    assert ModalityStep(registry, "auto", WindowPredictor(net_says_last), lambda d: d, [8, 8, 8]).probe(
        torch.rand(1, 8, 8, 8)) == "mr"  # the head's last class is the unknown-MRI row


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
    found = collect_cases(tmp_path / "a", REGISTRY)
    assert [c["name"] for c in found.cases] == ["case"] and not found.problems
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"testing": [{"image": "a/case.nii.gz", "modality": "ct"}, {"image": "b/case.nii"},
                                                {"image": "missing.nii.gz"}, {"image": "a/notes.txt"}]}))
    found = collect_cases(datalist, REGISTRY)
    assert [c["name"] for c in found.cases] == ["a_case", "b_case"]  # same stem twice: the folder tells them apart
    assert found.cases[0]["modality"] == "ct" and found.cases[0]["format"] == "nifti"
    problems = dict(found.problems)
    assert problems[str(tmp_path / "missing.nii.gz")] == "no such file or folder"
    assert problems[str(tmp_path / "a" / "notes.txt")].startswith("unsupported file type")
    datalist.write_text(json.dumps({"testing": [{"image": "a/case.nii.gz", "dataset": "nope"}, {"label": "x"}]}))
    problems = [reason for _, reason in collect_cases(datalist, REGISTRY).problems]
    assert any("unknown dataset 'nope'" in reason for reason in problems)
    assert any("'image' must be a file path" in reason for reason in problems)


def test_collect_cases_problems(tmp_path):
    assert collect_cases(tmp_path / "nope.nii.gz", REGISTRY).problems == [
        (str(tmp_path / "nope.nii.gz"), "no such file or folder")]
    assert "no NIfTI" in collect_cases(tmp_path, REGISTRY).problems[0][1]
    (tmp_path / "slice.dcm").write_bytes(b"\0" * 200)
    assert "single DICOM file" in collect_cases(tmp_path / "slice.dcm", REGISTRY).problems[0][1]
    assert "no input given" in collect_cases(None, REGISTRY).problems[0][1]


# --- label rule, merging, writer -----------------------------------------------------------------------------
def test_label_rule_chunked_equals_whole_and_first_wins_ties():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 6, 7, 8)).astype(np.float32)
    probs[1, 0, 0, 0] = probs[3, 0, 0, 0] = 0.99  # a tie: the lower label wins
    probs[:, 1, 1, 1] = 0.5  # exactly at the threshold is not above it
    whole = label_map_from(probs, 0.5)
    expected = np.where(probs.max(0) > 0.5, probs.argmax(0) + 1, 0)
    assert np.array_equal(whole, expected) and whole[0, 0, 0] == 2 and whole[1, 1, 1] == 0
    acc = LabelMap(probs.shape[1:], 0.5, 5)
    for start in range(0, 5, 2):
        acc.add(start, torch.from_numpy(probs[start : start + 2]))
    assert np.array_equal(acc.numpy(), whole)


def test_merge_groups_averages_each_groups_tasks():
    probs = torch.stack([torch.full((2, 2, 2), v) for v in (0.2, 0.4, 0.9)])
    liver = (Task(9, "amos_ct", "liver", 6), Task(0, "lits", "liver", 1))
    groups = [TaskGroup(1, "liver", liver), TaskGroup(2, "spleen", (Task(4, "amos_ct", "spleen", 1),))]
    merged = merge_groups(probs, {("lits", 0): 0, ("amos_ct", 9): 1, ("amos_ct", 4): 2}, groups)
    assert torch.allclose(merged[0], torch.full((2, 2, 2), 0.3)) and torch.allclose(merged[1], torch.full((2, 2, 2), 0.9))


def test_writer_names_completeness_and_never_overwrites(tmp_path):
    writer = CaseWriter(tmp_path, save_task_masks=True, label_names=["right kidney", "amos_ct/liver"])
    groups = [TaskGroup(1, "right kidney", (Task(5, "amos_ct", "right kidney", 2),)),
              TaskGroup(2, "amos_ct/liver", (Task(9, "amos_ct", "liver", 6),))]
    paths = writer.paths("case", groups)
    assert [p.name for p in paths.all()] == ["case_seg.nii.gz", "case_seg.json", "case_task-right-kidney.nii.gz",
                                             "case_task-amos_ct-liver.nii.gz"]
    assert writer.check("case.nii.gz", "case") == []
    paths.masks[2].write_text("a user's file")
    with pytest.raises(CaseError, match=r"case.nii.gz: output .*case_task-amos_ct-liver.nii.gz already exists; "
                                        r"pass --overwrite true"):
        writer.check("case.nii.gz", "case")
    replacing = CaseWriter(tmp_path, overwrite=True, label_names=["right kidney", "amos_ct/liver"])
    assert replacing.check("case.nii.gz", "case") == [paths.masks[2]]
    # a leftover without a sidecar is incomplete: --skip_existing recomputes it, replacing the leftover
    resuming = CaseWriter(tmp_path, skip_existing=True, save_task_masks=True, label_names=["amos_ct/liver"])
    assert not resuming.is_complete("case") and resuming.check("case.nii.gz", "case") == [paths.masks[2]]
    paths.label_map.write_text("x")
    paths.sidecar.write_text(json.dumps({"label_map": paths.label_map.name, "task_masks": {"2": paths.masks[2].name}}))
    assert resuming.is_complete("case")
    with pytest.raises(AlreadyComplete):
        resuming.check("case.nii.gz", "case")
    paths.masks[2].unlink()  # a sidecar that lists a missing file: incomplete again
    assert not resuming.is_complete("case")
    assert slug("Left optic nerve") == "left-optic-nerve"


def test_case_outputs_appear_together_and_replace_an_earlier_runs_files(tmp_path):
    writer = CaseWriter(tmp_path, overwrite=True, save_task_masks=True, label_names=["liver", "spleen"])
    writer.prepare()
    old = tmp_path / "case_task-spleen.nii.gz"
    old.write_text("an earlier run's mask of a task this run does not write")
    groups = [TaskGroup(1, "liver", (Task(9, "amos_ct", "liver", 6),))]
    paths = writer.paths("case", groups)
    output = writer.open("case", writer.check("case.nii.gz", "case"))
    output.sidecar(paths.sidecar, {"label_map": paths.label_map.name})
    output.picture(paths.label_map, lambda tmp: tmp.write_text("labels"))
    assert not paths.label_map.exists() and not paths.sidecar.exists()  # staged, not yet visible
    output.commit()
    output.discard()
    assert paths.label_map.read_text() == "labels" and paths.sidecar.exists() and not old.exists()
    assert not list(tmp_path.glob(".staging.*"))
    failed = writer.open("other", [])
    failed.picture(tmp_path / "other_seg.nii.gz", lambda tmp: tmp.write_text("half"))
    failed.discard()  # an exception before commit: nothing of the case appears
    assert not (tmp_path / "other_seg.nii.gz").exists() and not list(tmp_path.glob(".staging.*"))
    writer.folder.release()


def test_inference_config_has_every_infer_property(monkeypatch):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(BUNDLE)
    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer",
                              meta_file=str(BUNDLE / "configs" / "metadata.json"), bundle_root=str(BUNDLE))
    workflow.initialize()
    assert workflow.check_properties() == []


def test_window_predictor_repeats_the_case_tasks_for_any_window_batch():
    class Recorder(torch.nn.Module):
        def forward(self, image, task_index, modality_index, return_modality_logits=True):
            self.seen = (image.dtype, task_index.tolist(), modality_index.tolist(), return_modality_logits)
            return image.float().repeat(1, task_index.shape[1], 1, 1, 1) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)

    net = Recorder()
    image = torch.linspace(-3, 3, 16 ** 3).view(1, 1, 16, 16, 16)
    probs = WindowPredictor(net)(image.half(), torch.tensor([[9, 0]]), torch.tensor([0]))
    assert net.seen == (torch.float32, [[9, 0]], [0], False)  # the network always sees float32
    assert probs.dtype == torch.float16  # stitched in the input's precision
    torch.testing.assert_close(probs.float(), torch.sigmoid(torch.cat([image, -image], 1)), atol=1e-3, rtol=0)
    WindowPredictor(net)(image.repeat(3, 1, 1, 1, 1), torch.tensor([[9, 0]]), torch.tensor([2]))
    assert net.seen[1:3] == ([[9, 0]] * 3, [2] * 3)  # three windows of one case: the case's lists three times


def test_window_predictor_runs_every_context_on_every_window_and_drops_nulls():
    class Tagger(torch.nn.Module):
        """Channel t of a window says which task token it was computed for and in which pass."""

        calls: list = []

        def forward(self, image, task_index, modality_index, return_modality_logits=True):
            self.calls.append(task_index.tolist())
            out = task_index.float()[:, :, None, None, None] + 100 * task_index.shape[1]
            return out.expand(-1, -1, *image.shape[2:])

    contexts = [TaskContext("lits", (0, 1)), TaskContext("amos_ct", (4, 5, 6))]
    windows = torch.zeros(2, 1, 4, 4, 4)
    net = Tagger()
    probs = WindowPredictor(net)(windows, context_tensor(contexts), torch.tensor([0]))
    assert net.calls == [[[0, 1, -1]] * 2, [[4, 5, 6, -1]] * 2]  # one pass per context, each with its null
    expected = torch.sigmoid(torch.tensor([300.0, 301.0, 404.0, 405.0, 406.0]))
    assert probs.shape == (2, 5, 4, 4, 4) and torch.equal(probs[1, :, 0, 0, 0], expected)
    kept = WindowPredictor(Tagger(), keep_null_channels=True)(windows, torch.tensor([[0, 1, -1]]), torch.tensor([0]))
    assert kept.shape[1] == 3  # validation keeps the null channel, aligned with its padded label


def test_modality_precedence_and_dicom_tags(registry):
    step = ModalityStep(registry, "auto")
    step.probe = lambda image: "t2"
    step.predictor = step.normalizer = object()

    def chosen(requested="auto", **data):
        step.requested = requested
        return step({"image": None, "source": "scan", **data})

    assert chosen(dicom_modality="MR") == ("mr", "DICOM Modality tag MR")
    assert chosen(dicom_modality="PT") == ("pet", "DICOM Modality tag PT")
    assert chosen("ct", dicom_modality="MR") == ("ct", "--modality")  # the user's word wins
    assert chosen(modality="t1_out", dataset="chaos", dicom_modality="CT") == ("t1", "datalist")
    assert chosen() == ("t2", "network modality head")
    with pytest.raises(CaseError, match="scan: DICOM Modality 'US' is not one the model knows"):
        chosen(dicom_modality="US")


def test_the_task_free_trunk_is_computed_once_and_changes_nothing():
    torch.manual_seed(3)
    net = HermesResUNet(base_channels=4, num_tasks=72).eval()
    contexts = [TaskContext("lits", (0, 1)), TaskContext("amos_ct", (4, 5, 6)), TaskContext("kits", (2, 3))]
    windows = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        together = WindowPredictor(net)(windows, context_tensor(contexts), torch.tensor([0]))
        apart = [WindowPredictor(net)(windows, torch.tensor([c.tokens]), torch.tensor([0])) for c in contexts]
    torch.testing.assert_close(together, torch.cat(apart, dim=1), atol=1e-6, rtol=0)


def test_pet_inference_can_keep_its_native_slice_spacing(tmp_path, monkeypatch):
    """--native_slice_spacing true: a case stated to be PET is resampled in-plane only, as autoPET was prepared."""
    from monai.bundle import ConfigParser
    from monai.data.utils import affine_to_spacing

    volume = np.random.default_rng(0).random((40, 40, 20)).astype(np.float32) * 5
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "pet.nii.gz")
    monkeypatch.chdir(BUNDLE)
    spacings = {}
    for modality, native in (("pet", "true"), ("ct", "true"), ("pet", "false")):
        parser = ConfigParser()
        parser.read_config("configs/inference.json")
        parser.update({"modality": modality, "native_slice_spacing": native})
        parser.parse()
        data = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "pet.nii.gz"),
                                                          "source": "pet.nii.gz"})
        spacings[(modality, native)] = [round(float(v), 3) for v in affine_to_spacing(data["image"].affine)]
    assert spacings[("pet", "true")] == [3.0, 1.5, 1.5]  # S (the slice axis after SPL) kept at 3 mm
    assert spacings[("ct", "true")] == spacings[("pet", "false")] == [1.5, 1.5, 1.5]
