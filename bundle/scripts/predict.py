"""The one door into the network for whole volumes: task contexts, window adapter, sliding-window probabilities.

Training validation, inference and evaluation all predict through :class:`WindowPredictor`, so they compute the same
thing: per-task sigmoid probabilities of every window averaged uniformly over overlapping windows (the published
sliding window), each task run in its own dataset's context (its dataset's full task list plus one null token).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from torch import nn

from .errors import SetupError
from .networks.base import SIZE_DIVISOR, HermesNetwork, check_window
from .registry import NULL_TASK, TaskRegistry

#: Pads the rows of a contexts tensor (a row's tokens are task ids and -1 nulls).
ABSENT = -2
#: Past this many task-voxels on CUDA, windows are stitched in float16 to bound memory.
LOW_PRECISION_VOXELS = 2_000_000_000


def _plain(tensor: Any) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)


def _compiled_or_eager(eager: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(eager)``; if compiling or running the compiled code fails, warn once and run eagerly."""
    chosen: list[Callable[..., Any]] = [torch.compile(eager)]

    def run(*args: Any, **kwargs: Any) -> Any:
        if chosen[0] is not eager:
            try:
                return chosen[0](*args, **kwargs)
            except Exception as err:  # a backend that cannot build this graph: same result, eagerly
                warnings.warn(f"torch.compile is not used ({type(err).__name__}: {str(err)[:200]}); running eagerly")
                chosen[0] = eager
        return eager(*args, **kwargs)

    return run


@dataclass(frozen=True)
class TaskContext:
    """The task tokens of one forward pass: one dataset's full task list and one null token, as the model was trained.

    Task tokens are keys and values of the cross-attention at every fusion site, so a task's output depends on the
    other tokens of its pass; the published model only ever saw one dataset's list with at least one null.
    """

    dataset: str
    task_ids: tuple[int, ...]

    @property
    def tokens(self) -> tuple[int, ...]:
        return (*self.task_ids, NULL_TASK)


def dataset_contexts(registry: TaskRegistry, datasets: Sequence[str]) -> list[TaskContext]:
    """One context per dataset (in the order given, each once)."""
    return [TaskContext(name, tuple(registry.task_ids(name))) for name in dict.fromkeys(datasets)]


def context_tensor(contexts: Sequence[TaskContext]) -> torch.Tensor:
    """``K × L`` tokens, one row per context, padded at the end with ``ABSENT``."""
    width = max(len(c.tokens) for c in contexts)
    rows = [list(c.tokens) + [ABSENT] * (width - len(c.tokens)) for c in contexts]
    return torch.tensor(rows, dtype=torch.long)


def channel_layout(contexts: Sequence[TaskContext]) -> dict[tuple[str, int], int]:
    """(dataset, task id) -> output channel of :class:`WindowPredictor` for these contexts (nulls dropped)."""
    layout: dict[tuple[str, int], int] = {}
    for context in contexts:
        for task_id in context.task_ids:
            layout[(context.dataset, task_id)] = len(layout)
    return layout


class WindowPredictor(nn.Module):
    """What a sliding-window inferer calls: a batch of windows of one case -> per-task probabilities.

    ``contexts`` (``K × L``, or a single ``1 × n`` / ``n`` task list) holds one row of tokens per forward pass: task
    ids, ``-1`` nulls, ``ABSENT`` padding. Every row is run on every window (so any ``sw_batch_size`` works), and the
    output has one channel per task token of each row in order: nulls are dropped unless ``keep_null_channels``
    (training validation keeps them so channels line up with its padded labels). On CUDA, rows of equal length run
    as one batch. bf16 autocast on CUDA when ``amp``; the output keeps the windows' dtype (float16 windows are
    stitched in float16).

    ``cpu_amp``: bf16 autocast on the CPU too (worth it only on CPUs with native bf16 matrix units, e.g. AMX; the
    model card gives its measured agreement with float32).

    Speed switches, none of which changes what is computed (the parity tests hold with each): ``channels_last``
    stores 3D feature maps channels-last on CUDA (cuDNN's fast layout for bf16 convolutions); ``compile`` runs the
    network's passes through ``torch.compile``, falling back to eager execution, with a warning, where it does not
    build.
    """

    def __init__(
        self,
        network: nn.Module,
        amp: bool = True,
        keep_null_channels: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        cpu_amp: bool = False,
    ) -> None:
        super().__init__()
        self.cpu_amp = bool(cpu_amp)
        self.network = network
        self.amp = bool(amp)
        self.keep_null_channels = bool(keep_null_channels)
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self._passes: dict[str, Callable[..., Any]] = {}
        self._network_channels_last = False

    def _pass(self, name: str) -> Callable[..., Any]:
        """The network's method ``name`` (``__call__``, ``forward_contexts``, ``encode_context_free``), compiled when
        asked and possible."""
        if name not in self._passes:
            eager = getattr(self.network, name)
            self._passes[name] = _compiled_or_eager(eager) if self.compile else eager
        return self._passes[name]

    def _autocast(self, windows: torch.Tensor) -> torch.autocast:
        """bf16 autocast where asked: on CUDA with ``amp``, on the CPU with ``cpu_amp``."""
        if windows.is_cuda:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp)
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=self.cpu_amp)

    def _layout(self, windows: torch.Tensor) -> torch.Tensor:
        if self.channels_last and windows.is_cuda and windows.ndim == 5:
            if not self._network_channels_last:
                self.network.to(memory_format=torch.channels_last_3d)
                self._network_channels_last = True
            return windows.contiguous(memory_format=torch.channels_last_3d)
        return windows

    def _run(
        self,
        windows: torch.Tensor,
        shared: list[torch.Tensor] | None,
        tasks: torch.Tensor,
        modality: torch.Tensor,
        repeats: int,
    ) -> torch.Tensor:
        """Sigmoid probabilities of one pass (``repeats`` contexts stacked along the batch)."""
        with self._autocast(windows):
            if shared is None:
                batch = self._layout(windows.float().repeat(repeats, *([1] * (windows.ndim - 1))))
                logits = self._pass("__call__")(batch, tasks, modality, return_modality_logits=False)
            else:
                stacked = [t.repeat(repeats, *([1] * (t.ndim - 1))) for t in shared]
                logits = self._pass("forward_contexts")(stacked, tasks, modality, return_modality_logits=False)
        return torch.sigmoid(logits.float()).to(windows.dtype)

    def forward(self, windows: torch.Tensor, contexts: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        count = windows.shape[0]
        rows = contexts.reshape(-1, contexts.shape[-1]).to(windows.device)
        modality = modality_index.reshape(-1)[:1].to(windows.device)
        lengths = (rows != ABSENT).sum(dim=1).tolist()
        shared = None
        if len(rows) > 1 and isinstance(self.network, HermesNetwork):  # the task-free part once per window
            self.network.check_inputs(windows, rows[:1, : lengths[0]].expand(count, -1), modality.expand(count))
            with self._autocast(windows):
                shared = self._pass("encode_context_free")(self._layout(windows.float()))
        outputs: list[torch.Tensor | None] = [None] * len(rows)
        groups = {n: [k for k, m in enumerate(lengths) if m == n] for n in dict.fromkeys(lengths)}
        if not windows.is_cuda:  # on the CPU one context at a time: same work, a fraction of the memory
            groups = {f"{n}:{k}": [k] for n, ks in groups.items() for k in ks}
        for members in groups.values():
            width = lengths[members[0]]
            tokens = rows[members, :width]
            probs = self._run(
                windows,
                shared,
                tokens.repeat_interleave(count, dim=0),
                modality.expand(len(members) * count),
                len(members),
            )
            probs = probs.reshape(len(members), count, width, *probs.shape[2:])
            for position, k in enumerate(members):
                keep = tokens[position] >= 0 if not self.keep_null_channels else tokens[position] != ABSENT
                outputs[k] = probs[position][:, keep]
        return torch.cat(outputs, dim=1)  # type: ignore[arg-type]

    @torch.no_grad()
    def modality_logits(self, window: torch.Tensor, modality_index: int = -1) -> torch.Tensor:
        """The modality head's logits for one window (``1 × C × D × H × W``), read with only the null task."""
        device = window.device
        tasks = torch.full((1, 1), NULL_TASK, dtype=torch.long, device=device)
        modality = torch.full((1,), modality_index, dtype=torch.long, device=device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=window.is_cuda and self.amp):
            _, logits = self.network(window.float(), tasks, modality)
        return logits.float()


def sliding_window_probabilities(
    image: Any,
    contexts: Sequence[TaskContext],
    modality_index: Any,
    inferer: Callable[..., torch.Tensor],
    predictor: nn.Module,
    device: torch.device | str,
    low_precision_voxels: int = LOW_PRECISION_VOXELS,
) -> torch.Tensor:
    """Per-task probabilities (on ``device``) of one preprocessed image (``C × spatial``), one channel per task of
    each context in order (``channel_layout`` says which); every window runs every context."""
    device = torch.device(device)
    pixels = _plain(image)
    tokens = context_tensor(contexts)
    big = sum(len(c.task_ids) for c in contexts) * pixels[0].numel() > low_precision_voxels
    dtype = torch.float16 if big and device.type == "cuda" else torch.float32
    with torch.no_grad():
        out = inferer(
            pixels[None].to(device, dtype),
            predictor,
            tokens.to(device),
            torch.as_tensor(modality_index, dtype=torch.long).reshape(1).to(device),
        )
    return _plain(out)[0]


def check_sliding_window(inferer: Any, size_divisor: int = SIZE_DIVISOR, overlap_option: str = "overlap") -> None:
    """Refuse, before any case, sliding-window settings that would otherwise fail inside every case (MONAI checks
    them per call): the window (:func:`check_window`), the overlap (``--overlap_option``) and the windows per call.
    Inferers other than MONAI's sliding window have none of these."""
    if not isinstance(inferer, SlidingWindowInferer):
        return
    check_window(inferer.roi_size, size_divisor)
    try:
        overlaps = [float(o) for o in (inferer.overlap if isinstance(inferer.overlap, Sequence) else [inferer.overlap])]
    except (TypeError, ValueError):
        overlaps = [float("nan")]
    if not all(0.0 <= o < 1.0 for o in overlaps):
        raise SetupError(
            f"--{overlap_option}: expected the windows' overlap, a fraction in [0, 1), got {inferer.overlap}"
        )
    batch = inferer.sw_batch_size
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise SetupError(f"--sw_batch_size: expected 1 or more windows per network call, got {batch!r}")
