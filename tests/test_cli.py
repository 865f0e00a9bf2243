"""Command-line switches mean what they say in every workflow, and every failure ends in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.cli import flag, probability, report
from scripts.errors import CaseError, SetupError, one_line

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
#: Every workflow a user runs, as the config files MONAI merges for it.
WORKFLOWS = {
    "training": ["configs/train.json"],
    "training (published recipe)": ["configs/train.json", "configs/train_published.json"],
    "training (torchrun)": ["configs/train.json", "configs/multi_gpu_train.json"],
    "inference": ["configs/inference.json"],
    "evaluate": ["configs/inference.json", "configs/evaluate.json"],
}


def test_flag_words():
    for word in ("false", "False", "0", "no", "NO", "off", "", None, False, 0):
        assert flag(word, "x") is False, word
    for word in ("true", "True", "1", "yes", "on", True, 1):
        assert flag(word, "x") is True, word
    for word in ("maybe", "2", "flase", 2, [True]):
        with pytest.raises(SetupError, match=r"--overwrite: expected true or false, got "):
            flag(word, "overwrite")


def test_probability_settings():
    """The one check of a probability setting (--threshold 2 used to be accepted and label nothing); the case
    pipeline calls it before any case (tests/test_case_pipeline.py::test_bad_settings_are_refused_before_any_case)."""
    assert probability(0.5, "threshold") == 0.5 and probability("0.25", "threshold") == 0.25
    for bad in (2, 1, 0, -0.1, "high", None, True, float("nan")):
        with pytest.raises(SetupError, match=r"^--threshold: expected a probability between 0 and 1 \(exclusive\), got "):
            probability(bad, "threshold")


def _parser(files: list[str], **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / f) for f in files])
    parser.update(overrides)
    parser.parse()
    return parser


def _switches(files: list[str]) -> list[str]:
    return list(_parser(files).get("switches"))


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_every_boolean_switch_of_every_workflow_means_what_it_says(workflow, monkeypatch):
    """All switches of a workflow are checked in one call (``@flags``), ``distributed`` included."""
    monkeypatch.setattr("scripts.cli._state", {"debug": False, "installed": False})  # --debug true sets it
    monkeypatch.chdir(BUNDLE)  # as a user runs it, from the bundle folder
    files = WORKFLOWS[workflow]
    switches = _switches(files)
    assert {"debug", "amp"} <= set(switches), switches
    if workflow.startswith("training"):
        assert {"distributed", "resume", "finetune", "export_to_bundle"} <= set(switches), switches
    for name in switches:
        for word, expected in (("false", False), ("False", False), ("0", False), ("no", False), ("true", True)):
            value = _parser(files, **{name: word}).get_parsed_content("flags")
            assert value[name] is expected and getattr(value, name) is expected, (workflow, name, word, value)
        with pytest.raises(Exception) as err:
            _parser(files, **{name: "perhaps"}).get_parsed_content("flags")
        assert one_line(err.value) == f"--{name}: expected true or false, got 'perhaps'", (workflow, name)


@pytest.mark.parametrize("word", ["false", "0", "no"])
def test_distributed_false_means_one_process(word, monkeypatch):
    """``--distributed false`` used to reach the config as the true string "false": training then asked for a
    process group that nobody had started."""
    import torch.distributed as dist

    from scripts.training import processes

    monkeypatch.chdir(BUNDLE)
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    flags = _parser(WORKFLOWS["training"], distributed=word).get_parsed_content("flags")
    assert processes.start(flags, torch.device("cpu"), seed=0) == 0 and not dist.is_initialized()
    flags = _parser(WORKFLOWS["training"], distributed="true").get_parsed_content("flags")
    with pytest.raises(ValueError, match="environment variable"):  # torchrun's variables: a process group was asked for
        processes.start(flags, torch.device("cpu"), seed=0)


def _references(value, path: str = "") -> list[tuple[str, str]]:
    """(config id, referenced id) for every ``@id`` in ``value``."""
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _references(v, f"{path}#{k}" if path else k)]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _references(v, f"{path}#{i}")]
    if isinstance(value, str):
        return [(path, ref) for ref in re.findall(r"@([\w#]+)", value)]
    return []


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_configs_read_switches_only_checked(workflow):
    """A raw switch is whatever the command line typed ("false" is a true string); everything reads ``@flags``."""
    files = WORKFLOWS[workflow]
    switches = set(_switches(files))
    raw = {}
    for path in files:
        raw.update(json.loads((BUNDLE / path).read_text()))
    for where, ref in _references(raw):
        if where.startswith("switches") or where == "flags":
            continue
        assert ref not in switches, f"{workflow}: {where} reads the unchecked switch @{ref}; read @flags.{ref}"
        assert not ref.startswith("switches"), f"{workflow}: {where} reads @{ref}; only 'flags' checks switches"


def test_errors_are_reported_in_one_line(capsys):
    try:
        try:
            raise CaseError("x.nii: image is 2D")
        except CaseError as inner:
            raise RuntimeError("applying transform <CheckImaged>\nlong trace") from inner
    except RuntimeError as outer:
        assert one_line(outer) == "x.nii: image is 2D"
        report(type(outer), outer, outer.__traceback__)
    assert capsys.readouterr().err == "error: x.nii: image is 2D\n"
    assert one_line(EOFError("Compressed file ended\nmore")) == "EOFError: Compressed file ended"
    assert one_line(KeyError("unknown dataset 'x'")) == "KeyError: unknown dataset 'x'"


def test_a_bad_switch_stops_a_real_run_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                           "--input", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--overwrite", "maybe"],
                          cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "error: --overwrite: expected true or false, got 'maybe'"
    assert "Traceback" not in done.stderr
    with_debug = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                                 "--input", str(tmp_path), "--overwrite", "maybe", "--debug", "true"],
                                cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert "Traceback" in with_debug.stderr
    assert with_debug.stderr.strip().splitlines()[-1].startswith("error: --overwrite")
    assert not (tmp_path / "out").exists()  # nothing was done before the check


def test_importing_the_package_leaves_the_interpreter_alone():
    """A notebook, MONAI Label or the Model Zoo's verifier importing the network keeps its own tracebacks; the one-line
    report belongs to the commands and workflows a user runs."""
    probe = ("import sys, scripts, scripts.networks, scripts.predict, scripts.weights\n"
             "print(sys.excepthook is sys.__excepthook__)\n"
             "from scripts.cli import install_error_report\n"
             "install_error_report()\n"
             "print(sys.excepthook is sys.__excepthook__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


def test_every_command_reports_a_failure_in_one_line(tmp_path):
    """Each ``python -m scripts.<command>`` installs the report itself (nothing is installed on import any more)."""
    missing = tmp_path / "missing.pt"
    for command in (["scripts.convert_checkpoint", str(missing), str(tmp_path / "out.pt")],
                    ["scripts.export", str(missing)]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=BUNDLE, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode != 0, command
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith("error: "), (command, done.stderr[-2000:])
        assert str(missing) in done.stderr.strip().splitlines()[-1], (command, done.stderr[-2000:])


def test_logged_errors_carry_no_traceback_unless_debugging(capsys):
    """MONAI's StatsHandler logs an exception raised inside a running engine with its traceback; the user sees the
    message, and the traceback only with --debug true."""
    import logging

    from scripts.cli import set_debug

    logger = logging.getLogger("test_cli_engine")
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        for debug, expected in ((False, False), (True, True)):
            set_debug(debug)
            try:
                raise ValueError("inside the engine")
            except ValueError:
                logger.exception("Exception: inside the engine")
            err = capsys.readouterr().err
            assert "Exception: inside the engine" in err
            assert ("Traceback" in err) is expected
    finally:
        set_debug(False)
        logging.getLogger().removeHandler(handler)
