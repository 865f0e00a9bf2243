"""The random-number state a resumed run needs to draw what the uninterrupted run would have drawn.

Saved in ``latest.pt`` at an epoch's end and restored when the resumed trainer starts: torch (CPU and CUDA), numpy,
Python's ``random``, the sampler's generator, and the ``RandomState`` of every random transform of the training
chain (with ``num_workers=0`` the crops and augmentations are drawn in the main process from those; with workers,
MONAI re-seeds the workers' copies from the torch generator each epoch, so restoring torch covers them).

Everything is stored as tensors and plain numbers, so the checkpoint still loads with ``weights_only=True``. Under
torch.distributed only rank 0 writes, so only its state is saved: rank 0 continues exactly; every other rank
continues with streams of its own derived from that state and its rank (reproducible, distinct per rank, but not
the streams it would have drawn without the interruption).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from monai.transforms import Transform


def _pack(state: tuple) -> dict[str, Any]:
    """A numpy ``RandomState.get_state()`` tuple as tensors and numbers."""
    kind, keys, position, has_gauss, cached = state
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _unpack(saved: Mapping[str, Any]) -> tuple:
    keys = saved["keys"].cpu().numpy().astype(np.uint32)
    return saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached_gaussian"]


def transform_random_states(transforms: Any) -> list[np.random.RandomState]:
    """Every ``RandomState`` the transforms draw from, in a stable order, each once.

    Walks ``Compose`` lists and the attributes of MONAI transforms (wrapped and inner transforms such as
    ``RandAffined.rand_affine.rand_affine_grid`` have their own states).
    """
    found: dict[int, np.random.RandomState] = {}

    def walk(obj: Any, depth: int) -> Iterator[np.random.RandomState]:
        if depth > 8:
            return
        if isinstance(obj, np.random.RandomState):
            yield obj
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                yield from walk(item, depth + 1)
        elif isinstance(obj, Transform):
            for value in vars(obj).values():
                yield from walk(value, depth + 1)

    for state in walk(transforms, 0):
        found.setdefault(id(state), state)
    return list(found.values())


class RandomStates:
    """Checkpoint entry of the random-number state (``state_dict``/``load_state_dict``).

    Args:
        transforms: the training chain (a ``Compose``) whose random transforms are saved too; None for none.
        generator: the training sampler's generator; None when it draws from torch's default generator.
    """

    def __init__(self, transforms: Any = None, generator: torch.Generator | None = None) -> None:
        self.transforms = transforms
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _pack(np.random.get_state()),
            "python": random.getstate(),
            "sampler": self.generator.get_state() if self.generator is not None else None,
            "transforms": [_pack(state.get_state()) for state in transform_random_states(self.transforms)],
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        states = transform_random_states(self.transforms)
        if len(states) != len(saved["transforms"]):
            raise ValueError(
                f"the training transforms draw from {len(states)} random states, the checkpoint saved "
                f"{len(saved['transforms'])}; the transform chain changed since it was written"
            )
        torch.set_rng_state(saved["torch"])
        if saved.get("cuda") and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved["cuda"])
        np.random.set_state(_unpack(saved["numpy"]))
        version, internal, gauss = saved["python"]
        random.setstate((version, tuple(internal), gauss))
        if self.generator is not None and saved.get("sampler") is not None:
            self.generator.set_state(saved["sampler"])
        for state, value in zip(states, saved["transforms"]):
            state.set_state(_unpack(value))
        rank = idist.get_rank() if idist.get_world_size() > 1 else 0
        if rank > 0:
            self._reseed(int(torch.randint(0, 2**31 - 1 - rank, (1,))) + rank, states)

    def _reseed(self, seed: int, states: list[np.random.RandomState]) -> None:
        """Other ranks than 0: streams of their own, derived from rank 0's saved state and the rank."""
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if self.generator is not None:
            self.generator.manual_seed(seed)
        for index, state in enumerate(states):
            state.seed((seed + index + 1) % 2**32)
