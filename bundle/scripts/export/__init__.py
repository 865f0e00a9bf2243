"""Export Hermes weights for serving: an ONNX model (for onnxruntime and other ONNX runtimes) or a ``torch.export``
program (``.pt2``: ``torch.export.load``, AOTInductor), each checked against the eager network before it appears.

Run from the bundle folder::

    python -m scripts.export WEIGHTS --format onnx|pt2|onnx,pt2 [--out FILE] [--overwrite] [--check_size 128]
        [--task_registry_extra FILE ...] [--backbone r|m] [--base_channels N ...]

WEIGHTS is any file inference takes (the bundle's weights, a run checkpoint's EMA weights, the published checkpoint),
of either backbone (recognised from the tensor names). The network is built as ``configs/inference.json`` builds it:
the task registry (with the ``<weights>.tasks.json`` companion beside the weights and any ``--task_registry_extra``)
gives the task and modality rows, the rest is the release size unless an option says otherwise. (This is not
``scripts/training/weights_export.py``, which turns a run checkpoint into a weights file.)

The exported graph is the eval-mode network returning the main segmentation logits and the modality head's logits
(no Hermes-M auxiliary output, which only training uses):

- ``image``: float32 ``B × 1 × D × H × W``, every side a multiple of 16 and at least 32; B, D, H, W are dynamic;
- ``task_index``: int64 ``B × T``, global task ids, ``-1`` pads (null token); T is dynamic;
- ``modality_index``: int64 ``B``; ``-1`` = MRI of unknown sequence;
- outputs ``seg_logits``: float32 ``B × T × D × H × W``, and ``modality_logits``: float32 ``B × M`` (class k is the
  modality of prior row k, the last one MRI of unknown sequence; the table travels in the file, see below).

The task list and modality table of the weights travel inside the file (ONNX metadata ``hermes``, the ``.pt2``
archive's extra file ``hermes.json``). The default output is WEIGHTS with the format's suffix (``models/model.onnx``,
``models/model.pt2``); an existing file is never replaced without ``--overwrite``. Each export is written under a
temporary name, loaded back (onnxruntime, ``torch.export.load``), run on a ``check_size``³ window with two task lists
and compared with the eager network; only an export within ``TOLERANCE`` is moved into place, and the measured error
is printed. A failure is one line (``error: ...``) and exit status 1.
"""

from .check import DEFAULT_CHECK_SIZE, TOLERANCE, CheckResult, CheckWindows, ExportCheckError
from .command import export, main, write_checked
from .formats import EXPORTERS, FORMATS, INSTALL_HINT, ONNX_PACKAGES, Exporter
from .graph import INPUT_NAMES, MIN_SIDE, OUTPUT_NAMES, SIZE_DIVISOR

__all__ = [
    "DEFAULT_CHECK_SIZE",
    "EXPORTERS",
    "FORMATS",
    "INPUT_NAMES",
    "INSTALL_HINT",
    "MIN_SIDE",
    "ONNX_PACKAGES",
    "OUTPUT_NAMES",
    "SIZE_DIVISOR",
    "TOLERANCE",
    "CheckResult",
    "CheckWindows",
    "ExportCheckError",
    "Exporter",
    "export",
    "main",
    "write_checked",
]
