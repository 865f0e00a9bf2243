"""Shared pytest setup: make the bundle's ``scripts`` package importable, locate the shared fixtures, and run the
bundle's workflows the one way every test file uses.

``run_workflow`` is ``python -m monai.bundle run <id> --config_file ... <overrides>`` from bundle/, as a user types
it: a real process, for tests of what a process shows (exit status, stdout/stderr, one-line errors, signals,
torchrun). ``run_workflow_in_process`` runs the same command line in this interpreter with MONAI's own ``run``
(same argument parsing as the command line) and hands back the same ``CompletedProcess``: for tests of what a run
computes and writes, it saves the 5-8 s of importing torch and MONAI in a new interpreter per run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "bundle"
SHARED_ROOT = REPO_ROOT.parent / "shared"
sys.path.insert(0, str(BUNDLE_ROOT))
#: One OpenMP thread per test process (before anything imports torch) unless the caller set a number: the suite's
#: parallelism is its xdist workers, one per core, and torch's own threads on top of them oversubscribe the cores and
#: spin. Measured on 2 cores, the whole suite: 18 min 17 s of CPU and 10 min 9 s wall with torch's default threads,
#: 12 min 22 s and 7 min 14 s with one. Runs started by the tests inherit it (``workflow_env``).
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The configs each workflow id runs with, as the model card's commands give them (relative to bundle/).
WORKFLOW_CONFIGS = {
    "training": ("configs/train.json",),
    "export": ("configs/train.json",),
    "inference": ("configs/inference.json",),
    "evaluate": ("configs/inference.json", "configs/evaluate.json"),
}


def workflow_command(workflow: str, *args: object, configs: Sequence[str] | None = None,
                     launcher: Sequence[str] = (sys.executable, "-m")) -> list[str]:
    """The command line of ``monai.bundle run`` (``configs`` default to the workflow's own, relative to bundle/)."""
    configs = tuple(configs or WORKFLOW_CONFIGS[workflow])
    config_arg = configs[0] if len(configs) == 1 else json.dumps(list(configs))
    return [*launcher, "monai.bundle", "run", workflow, "--config_file", config_arg, *map(str, args)]


def workflow_env(env: dict | None = None) -> dict:
    """A run's environment: this one (one OpenMP thread unless the caller set a number), quiet warnings."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}


def check_ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``done`` if it exited 0, else fail the test with the command and the ends of its output."""
    if done.returncode != 0:
        command = done.args if isinstance(done.args, str) else " ".join(map(str, done.args))
        pytest.fail(f"{command} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return done


def run_workflow(workflow: str, *args: object, configs: Sequence[str] | None = None, env: dict | None = None,
                 timeout: int = 600, launcher: Sequence[str] = (sys.executable, "-m"),
                 expect_ok: bool = False) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run <workflow> --config_file ... *args`` from bundle/, in a new process."""
    command = workflow_command(workflow, *args, configs=configs, launcher=launcher)
    done = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=workflow_env(env))
    return check_ok(done) if expect_ok else done


def start_workflow(workflow: str, *args: object, configs: Sequence[str] | None = None,
                   env: dict | None = None) -> subprocess.Popen:
    """``run_workflow`` started in the background, stdout and stderr piped as text (for signals).

    The process starts with Ctrl-C's default disposition, as from a terminal: a suite started as a background job
    (``cmd &`` in a script, as CI runners and job shells do) inherits SIGINT *ignored*, Python then keeps it ignored,
    and a test's Ctrl-C would never arrive (the bundle rightly respects an ignored SIGINT, as ``nohup`` users expect)."""
    return subprocess.Popen(workflow_command(workflow, *args, configs=configs), cwd=BUNDLE_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=workflow_env(env),
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def parse_overrides(args: Sequence[object]) -> dict:
    """``--key value`` / ``--key=value`` pairs as the command line's parser (fire) reads them."""
    from fire.parser import DefaultParseValue

    words, overrides = [str(a) for a in args], {}
    while words:
        word = words.pop(0)
        if not word.startswith("--"):
            raise ValueError(f"expected --key value pairs, got {word!r} in {list(map(str, args))}")
        key, _, value = word[2:].partition("=")
        if not _:
            value = words.pop(0)
        overrides[key] = DefaultParseValue(value)
    return overrides


class _Forward(io.TextIOBase):
    """The ``sys.stdout`` (or ``sys.stderr``) of in-process runs: writes go to the current run's captured output, and
    outside runs to this interpreter's own stream. Log handlers a run creates keep a reference to the stream they were
    given (MONAI's ``StatsHandler`` adds one per logger name, once per interpreter); through this object the next
    run's handlers write into the next run's output."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.target = name, None

    def write(self, text: str) -> int:
        return (self.target or getattr(sys, self.name)).write(text)

    def flush(self) -> None:
        (self.target or getattr(sys, self.name)).flush()


_STDOUT, _STDERR = _Forward("stdout"), _Forward("stderr")


@contextlib.contextmanager
def _isolated_run(env: dict | None, threads: int | None) -> Iterator[None]:
    """What a run changes in the interpreter, put back afterwards: working folder, environment, logging handlers,
    the bundle's error report and debug switch, the SIGINT handler, torch threads and MONAI's determinism; and the run
    folders a training locks for as long as its process lives are let go, as the end of a process lets them go."""
    import monai
    import torch

    from scripts import cli
    from scripts.training import run_folder

    held = set(run_folder._held)

    root, saved_state = logging.getLogger(), dict(cli._state)
    saved = (os.getcwd(), dict(os.environ), list(root.handlers), root.level, sys.excepthook,
             signal.getsignal(signal.SIGINT), torch.get_num_threads())
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    if threads:
        torch.set_num_threads(threads)
    os.chdir(BUNDLE_ROOT)  # as a user runs it, from the bundle folder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        cwd, environ, handlers, level, hook, sigint, own_threads = saved
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook = hook
        cli._state.clear()
        cli._state.update(saved_state)
        signal.signal(signal.SIGINT, sigint)
        torch.set_num_threads(own_threads)
        monai.utils.set_determinism(None)
        for key in set(run_folder._held) - held:
            run_folder._held.pop(key).release()


def run_workflow_in_process(workflow: str, *args: object, configs: Sequence[str] | None = None,
                            env: dict | None = None, expect_ok: bool = False,
                            **overrides: object) -> subprocess.CompletedProcess:
    """``run_workflow`` in this interpreter: MONAI's ``monai.bundle.scripts.run`` with the command line's overrides
    (``overrides``: more, as Python values). A failure ends as the command line's would: the bundle's error report
    on stderr, exit status 1 (or the run's own ``SystemExit`` status)."""
    from monai.bundle.scripts import run

    from scripts import cli

    settings = {**parse_overrides(args), **overrides}
    configs = [str(BUNDLE_ROOT / c) for c in (configs or WORKFLOW_CONFIGS[workflow])]
    out, err = io.StringIO(), io.StringIO()
    status = 0
    _STDOUT.target, _STDERR.target = out, err
    threads = int(env["OMP_NUM_THREADS"]) if env and "OMP_NUM_THREADS" in env else None  # as a process would have
    with _isolated_run(env, threads), contextlib.redirect_stdout(_STDOUT), contextlib.redirect_stderr(_STDERR):
        try:
            run(workflow, config_file=configs if len(configs) > 1 else configs[0], **settings)
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if stop.code is not None and not isinstance(stop.code, int):
                print(stop.code, file=sys.stderr)
        except Exception as failure:  # what the interpreter's excepthook (the bundle's error report) would print
            (cli.report if cli._state["installed"] else traceback.print_exception)(type(failure), failure,
                                                                                   failure.__traceback__)
            status = 1
        finally:
            _STDOUT.target = _STDERR.target = None
    command = workflow_command(workflow, *args, configs=configs)
    done = subprocess.CompletedProcess(command, status, out.getvalue(), err.getvalue())
    return check_ok(done) if expect_ok else done


@pytest.fixture(scope="session")
def bundle_root() -> Path:
    return BUNDLE_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures beside the checkout (present on CI); tests that need it skip with the reason otherwise."""
    path = SHARED_ROOT / "fixtures"
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (they ship in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def sample_suite() -> dict:
    """The built-in sample suite (real pyradiomics/mricron-data cases + synthetic PET) as {"root", "datalist",
    "task_registry", ...}; fetched once from PyPI/Debian into $HERMES_SAMPLE_DIR or ~/.cache/... and reused after.
    Parallel test workers share one fetch: the first builds under the folder's lock, the others wait and reuse it."""
    from scripts.sample_suite import ensure_sample_suite

    return ensure_sample_suite()


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> dict:
    """Two synthetic CT datasets annotating different structures (16 training and 2 held-out cases each, 32³ at
    1.5 mm); their datalist names their task registry. Written once per test process; tests only add files beside."""
    from scripts.sample_suite import make_phantom_datasets

    return make_phantom_datasets(tmp_path_factory.mktemp("phantoms"), n_cases=16, size=32, n_holdout=2, seed=0)


#: Test files that take a minute or more, longest first (measured on 2 cores: the learning runs ~130 s and ~120 s, the
#: export checks ~60 s, the incremental study ~55 s of training, the published-context check ~35 s). Workers take whole
#: files (--dist loadfile); started first, they run beside the many short files instead of after them.
LONG_FILES = ("test_learning.py", "test_learning_medformer.py", "test_export.py", "test_incremental.py",
              "test_task_context.py")


def pytest_collection_modifyitems(items: list) -> None:
    """The long files first, the rest in their usual order (pyproject.toml turns off xdist's own reordering, which
    puts files with the most tests first and so left these one-test files for the end of the run)."""
    rank = {name: index for index, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
