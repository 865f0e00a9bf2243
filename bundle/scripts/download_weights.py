"""``python -m scripts.download_weights [--bundle_path .]``: the published weights, with failures that say what to do.

Run from the bundle folder. It runs MONAI's own ``download_large_files`` for this bundle (the files ``large_files.yml``
names: the published Hermes-R checkpoint, landed at ``models/model.pt``), then checks that every weights file it names
loads: read with ``weights_only=True``, its tensor names recognised, and (Hermes-R) loaded into a network of the
file's own size. ``python -m monai.bundle download_large_files --bundle_path .`` does the same download and prints
MONAI's own errors; this command turns each failure into one line (``error: ...``, exit status 1):

- Google Drive links need the optional package ``gdown``: missing, it says what to install;
- Drive refuses a popular file for a while once its download quota is used up: it says to wait or to download the file
  in a browser and save it at the entry's path (the published format loads as it is; the converter
  ``python -m scripts.convert_checkpoint SRC DST`` is optional);
- a download that stops part way, a network that cannot be reached, a hash that does not match: what to do for each;
- a file already at the path that is not a complete checkpoint (MONAI skips existing files; without a published hash
  it cannot tell a half-finished one): delete it and run again.

``--debug true`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .checkpoint_names import BACKBONE_NAMES, backbone_of, strip_wrappers
from .cli import run_command, set_debug
from .errors import SetupError, error_chain, first_line
from .weights import held_weights, read_weights_file, state_dict_of

#: Suffixes of the manifest MONAI reads at the bundle root (``large_files.yml``, ``.yaml`` or ``.json``).
MANIFEST_SUFFIXES = (".yml", ".yaml", ".json")
#: Files of the manifest checked as weights after the download.
WEIGHTS_SUFFIXES = (".pt", ".pth")
#: The bundle's release network width; other widths need ``--base_channels`` in every workflow.
RELEASE_BASE_CHANNELS = 32
_NETWORK_ERRORS = (
    "URLError",
    "HTTPError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutError",
    "gaierror",
    "SSLError",
    "ProxyError",
)
_STOPPED_ERRORS = ("DownloadError", "ContentTooShortError", "IncompleteRead", "ChunkedEncodingError")


def read_manifest(bundle: Path) -> list[dict[str, Any]]:
    """The entries of the bundle's ``large_files`` manifest, each with its ``target`` path, as MONAI reads them."""
    from monai.bundle import ConfigParser

    manifests = sorted(p for p in bundle.glob("large_files*") if p.suffix in MANIFEST_SUFFIXES)
    if not manifests:
        raise SetupError(
            f"no large_files.yml in {bundle}: run this from the bundle folder, or pass --bundle_path " "BUNDLE"
        )
    parser = ConfigParser()
    parser.read_config([str(p) for p in manifests])
    entries = parser.get().get("large_files") or []
    return [{**entry, "target": bundle / str(entry["path"])} for entry in entries]


def _by_hand(entry: dict[str, Any]) -> str:
    return (
        f"or open {entry['url']} in a browser, download the file and save it as {entry['target']} "
        "(docs/README.md, Getting the weights; the published format loads as it is, "
        "python -m scripts.convert_checkpoint SRC DST converts it if you prefer)"
    )


def _names(err: BaseException) -> set[str]:
    return {type(item).__name__ for item in error_chain(err)}


def _gdown_reason(err: BaseException) -> str:
    """gdown's own reason, which it indents inside a longer message."""
    text = str(err).split("You may still be able", 1)[0]
    indented = " ".join(line.strip() for line in text.splitlines() if line.startswith("\t") and line.strip())
    return indented or first_line(err)


def explain(err: BaseException, entry: dict[str, Any] | None) -> str:
    """One line saying what went wrong with the download of ``entry`` and what to do."""
    if entry is None:
        return f"download_large_files failed ({type(err).__name__}: {first_line(err)})"
    url, target, names = entry["url"], entry["target"], _names(err)
    text = " ".join(str(item) for item in error_chain(err))
    if "gdown" in text and isinstance(err, RuntimeError) and "install" in text:
        return (
            f"{url} is on Google Drive, which needs the optional package gdown: pip install gdown (pinned in the "
            f"repository's requirements-weights.txt) and run this again, {_by_hand(entry)}"
        )
    if "FileURLRetrievalError" in names:
        reason = _gdown_reason(err)
        if "too many users" in reason.lower() or "quota" in reason.lower():
            return (
                f"Google Drive refused {url}: the file's download quota is used up for now ({reason[:160]}); "
                f"wait a few hours and run this again, {_by_hand(entry)}; the authors' README also names a "
                "Baidu mirror"
            )
        return (
            f"Google Drive gave no download link for {url} ({reason[:200]}); run this again later, "
            f"{_by_hand(entry)}"
        )
    if "HashCheckError" in names:
        return f"{first_line(err)}; delete {target} if it is there and run this again, {_by_hand(entry)}"
    if names & set(_STOPPED_ERRORS):
        return (
            f"the download of {url} stopped part way ({first_line(err)[:200]}); nothing was written to {target}: "
            f"run this again, {_by_hand(entry)}"
        )
    if names & set(_NETWORK_ERRORS) or "network issue" in text:
        return (
            f"could not download {url} ({type(err).__name__}: {first_line(err)[:200]}): check the network "
            f"connection or proxy and run this again, {_by_hand(entry)}"
        )
    return f"downloading {url} to {target} failed ({type(err).__name__}: {first_line(err)[:200]}), {_by_hand(entry)}"


def _size_of(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """Hermes-R constructor sizes read off the tensors (either layout)."""
    named = {strip_wrappers(name): tensor for name, tensor in weights.items()}
    stem = named.get("inc.conv1.weight", named.get("stem.conv.weight"))
    task = next(t for name, t in named.items() if name.endswith("task_prior"))
    modality = next(t for name, t in named.items() if name.endswith("modality_prior"))
    return {
        "base_channels": int(stem.shape[0]),
        "num_tasks": int(task.shape[0]) - 1,
        "num_modalities": int(modality.shape[0]),
        "modality_tokens": int(modality.shape[1]),
    }


def check_weights_file(path: Path) -> str:
    """What the weights file at ``path`` is, after loading it as the workflows will; one clear error otherwise."""
    from .networks import HermesResUNet

    checkpoint = read_weights_file(path)
    weights, _ = held_weights(checkpoint, str(path))
    backbone = backbone_of(weights)
    count = sum(t.numel() for t in weights.values())
    summary = f"{path}: {BACKBONE_NAMES[backbone]}, {count:,} parameters"
    if backbone != "r":
        return summary  # Hermes-M's sizes are options the tensor names alone do not tell
    try:
        size = _size_of(dict(weights))
    except (StopIteration, AttributeError) as err:
        raise SetupError(
            f"{path}: holds tensors but not a Hermes-R network's (no stem or prior tables); " "is it the right file?"
        ) from err
    network = HermesResUNet(in_channels=1, **size)
    state, kind = state_dict_of(checkpoint, network, str(path))
    network.load_state_dict(state, strict=True)
    note = (
        ""
        if size["base_channels"] == RELEASE_BASE_CHANNELS
        else f"; not the release width: run the workflows with --base_channels {size['base_channels']}"
    )
    return (
        f"{summary}, {kind}; loads into Hermes-R (base {size['base_channels']}, {size['num_tasks']} task rows, "
        f"{size['num_modalities']} modalities){note}"
    )


def download_weights(bundle_path: str | Path = ".") -> list[str]:
    """Download what the bundle's manifest names (MONAI's ``download_large_files``) and check every weights file;
    returns one description per weights file. Every failure is a ``SetupError`` saying what to do."""
    from monai.bundle import download_large_files

    bundle = Path(bundle_path)
    entries = read_manifest(bundle)
    pending = next((entry for entry in entries if not entry["target"].exists()), None)
    try:
        download_large_files(bundle_path=str(bundle))
    except Exception as err:  # MONAI, urllib, requests and gdown raise many types; each becomes one line
        raise SetupError(explain(err, pending)) from err
    described = []
    for entry in entries:
        target = entry["target"]
        if not target.is_file():  # MONAI's download_url ignores permission errors while moving the file into place
            raise SetupError(
                f"download_large_files finished but {target} is not there (MONAI ignores permission "
                f"errors while moving the file into place: is {target.parent} writable?), "
                f"{_by_hand(entry)}"
            )
        if target.suffix in WEIGHTS_SUFFIXES:
            described.append(check_weights_file(target))
    return described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.download_weights",
        description="Download the files large_files.yml names (the published Hermes-R "
        "checkpoint to models/model.pt) and check that they load.",
    )
    parser.add_argument("--bundle_path", default=".", help="the bundle folder (default: the current folder)")
    parser.add_argument("--debug", default="false", help="true: show the traceback of a failure")
    args = parser.parse_args(argv)
    set_debug(args.debug)
    for line in download_weights(args.bundle_path):
        print(f"ready: {line}", flush=True)
    return 0


if __name__ == "__main__":
    run_command(main)
