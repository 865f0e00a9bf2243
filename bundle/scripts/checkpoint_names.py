"""Renaming between the published Hermes-R checkpoint layout and this bundle's ``HermesResUNet``.

Kept apart from the converter command so that tests and tools can translate names without touching files.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Published fusion-layer module names, in the order of HermesResUNet.fusion.
PUBLISHED_FUSION = ("prior_init_fuse_2", "prior_init_fuse_3", "prior_init_fuse_4", "prior_fuse_5", "prior_fuse_6")

_ATTENTION_PARTS = {
    "prior_aggregate_block": "prior_attn",
    "feat_aggregate_block": "feature_attn",
    "prior_ffn": "prior_mlp",
    "feat_ffn": "feature_mlp",
}
_ATTENTION_LEAVES = {"norm1": "norm_query", "norm2": "norm_context", "norm": "norm"}


def _rename_fusion_tail(tail: str) -> str:
    """``attn_layers.K.prior_aggregate_block.fn.to_q.weight`` → ``blocks.K.prior_attn.to_q.weight``."""
    if tail in ("task_prior", "modality_prior"):
        return tail
    match = re.fullmatch(r"attn_layers\.(\d+)\.(\w+)\.(.+)", tail)
    if not match or match.group(2) not in _ATTENTION_PARTS:
        raise KeyError(tail)
    block, part, rest = match.groups()
    head, _, leaf = rest.partition(".")
    if head == "fn":  # the wrapped attention / MLP: its layers move up one level
        rest = leaf
    elif head in _ATTENTION_LEAVES:
        rest = f"{_ATTENTION_LEAVES[head]}.{leaf}"
    else:
        raise KeyError(tail)
    return f"blocks.{block}.{_ATTENTION_PARTS[part]}.{rest}"


def published_to_bundle_name(name: str) -> str:
    """Translate one published parameter name; raises ``KeyError`` for a name Hermes-R does not have."""
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"inc\.conv1\.(.+)", lambda m: f"stem.conv.{m[1]}"),
        (r"inc\.conv2\.(.+)", lambda m: f"stem.block.{m[1]}"),
        # encoder index 0 is the (parameter-free) max-pool, so published block j is our block j-1
        (r"down([1-4])\.conv\.(\d+)\.(.+)", lambda m: f"encoder.{int(m[1]) - 1}.blocks.{int(m[2]) - 1}.{m[3]}"),
        (r"up([1-4])\.conv\.(\d+)\.(.+)", lambda m: f"decoder.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}"),
        (r"out\.norm\.(.+)", lambda m: f"task_head.norm.{m[1]}"),
        (r"out\.classifier_pred\.(\d)\.(.+)", lambda m: f"task_head.mlp.{m[1]}.{m[2]}"),
        (r"mod_out\.norm\.(.+)", lambda m: f"modality_head.norm.{m[1]}"),
        (r"mod_out\.classifier\.(.+)", lambda m: f"modality_head.mlp.{m[1]}"),
    ]
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return build(match)
    module, _, tail = name.partition(".")
    if module in PUBLISHED_FUSION:
        try:
            return f"fusion.{PUBLISHED_FUSION.index(module)}.{_rename_fusion_tail(tail)}"
        except KeyError:
            pass
    raise KeyError(f"'{name}' is not a parameter of the published Hermes-R network")
