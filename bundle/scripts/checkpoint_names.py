"""Renaming between the published checkpoint layouts and this bundle's networks (Hermes-R ``HermesResUNet``,
Hermes-M ``HermesMedFormer``), and telling the two backbones apart by tensor names.

Kept apart from the converter command so that tests and tools can translate names without touching files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# Prefixes added by DistributedDataParallel / torch.compile around module names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Published fusion-layer module names, in the order of HermesResUNet.fusion.
PUBLISHED_FUSION = ("prior_init_fuse_2", "prior_init_fuse_3", "prior_init_fuse_4", "prior_fuse_5", "prior_fuse_6")

_ATTENTION_PARTS = {
    "prior_aggregate_block": "prior_attn",
    "feat_aggregate_block": "feature_attn",
    "prior_ffn": "prior_mlp",
    "feat_ffn": "feature_mlp",
}
_ATTENTION_LEAVES = {"norm1": "norm_query", "norm2": "norm_context", "norm": "norm"}


def strip_wrappers(name: str) -> str:
    """``module._orig_mod.inc.conv1.weight`` -> ``inc.conv1.weight``."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


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


Rules = list[tuple[str, Callable[[re.Match[str]], str]]]

#: Backbone ids, as configs and the converter's --backbone spell them.
BACKBONE_NAMES = {"r": "Hermes-R (ResUNet)", "m": "Hermes-M (MedFormer)"}
#: Only Hermes-M has the semantic-map fusion; it carries the same module name in both layouts.
_MEDFORMER_MARKER = "map_fusion."
#: Names only the published layouts have (both backbones): their stem and their modality classifier.
_PUBLISHED_MARKERS = ("inc.", "mod_out.")
#: Rules both published layouts share: the convolutional stem and the modality classifier.
_SHARED_RULES: Rules = [
    (r"inc\.conv1\.(.+)", lambda m: f"stem.conv.{m[1]}"),
    (r"inc\.conv2\.(.+)", lambda m: f"stem.block.{m[1]}"),
    (r"mod_out\.norm\.(.+)", lambda m: f"modality_head.norm.{m[1]}"),
    (r"mod_out\.classifier\.(.+)", lambda m: f"modality_head.mlp.{m[1]}"),
]


def backbone_of(names: Iterable[str]) -> str:
    """``"m"`` when the tensor names (published or bundle layout, wrappers allowed) are Hermes-M's, else ``"r"``."""
    return "m" if any(strip_wrappers(name).startswith(_MEDFORMER_MARKER) for name in names) else "r"


def is_published_layout(names: Iterable[str]) -> bool:
    """True for the authors' module names (``inc.*``, ``mod_out.*``), which this bundle's networks never use."""
    return any(strip_wrappers(name).startswith(_PUBLISHED_MARKERS) for name in names)


def _apply(rules: Rules, name: str) -> str | None:
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return build(match)
    return None


def published_to_bundle_name(name: str, backbone: str = "r") -> str:
    """Translate one published parameter name of the given backbone; ``KeyError`` for a name it does not have."""
    if backbone == "m":
        return _medformer_name(name)
    return _resunet_name(name)


def _resunet_name(name: str) -> str:
    rules: Rules = _SHARED_RULES + [
        # encoder index 0 is the (parameter-free) max-pool, so published block j is our block j-1
        (r"down([1-4])\.conv\.(\d+)\.(.+)", lambda m: f"encoder.{int(m[1]) - 1}.blocks.{int(m[2]) - 1}.{m[3]}"),
        (r"up([1-4])\.conv\.(\d+)\.(.+)", lambda m: f"decoder.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}"),
        (r"out\.norm\.(.+)", lambda m: f"task_head.norm.{m[1]}"),
        (r"out\.classifier_pred\.(\d)\.(.+)", lambda m: f"task_head.mlp.{m[1]}.{m[2]}"),
    ]
    renamed = _apply(rules, name)
    if renamed is not None:
        return renamed
    module, _, tail = name.partition(".")
    if module in PUBLISHED_FUSION:
        try:
            return f"fusion.{PUBLISHED_FUSION.index(module)}.{_rename_fusion_tail(tail)}"
        except KeyError:
            pass
    raise KeyError(f"'{name}' is not a parameter of the published Hermes-R network")


# Hermes-M: published attention-block parts -> HermesMedFormer's BidirectionalBlock parts.
_BLOCK_PARTS: Rules = [
    (r"norm2\.(.+)", lambda m: f"token_norm.{m[1]}"),
    (r"attn\.feat_qv\.(.+)", lambda m: f"feature_qv.{m[1]}"),
    (r"attn\.feat_out\.(.+)", lambda m: f"feature_out.{m[1]}"),
    (r"attn\.map_qv\.(.+)", lambda m: f"token_qv.{m[1]}"),
    (r"attn\.map_out\.(.+)", lambda m: f"token_out.{m[1]}"),
    (r"shortcut\.(.+)", lambda m: f"shortcut.{m[1]}"),
    (r"feedforward\.expand_proj\.(.+)", lambda m: f"feedforward.expand.{m[1]}"),
    (r"feedforward\.depthwise\.(.+)", lambda m: f"feedforward.depthwise.{m[1]}"),
    (r"feedforward\.se\.excitation\.([02])\.(.+)", lambda m: f"feedforward.squeeze.fc.{m[1]}.{m[2]}"),
    (r"feedforward\.pointwise\.(.+)", lambda m: f"feedforward.project.{m[1]}"),
]
# Published stage -> (our encoder/decoder index, our fusion-site index).
_MEDFORMER_STAGES = {"down2": (1, 0), "down3": (2, 1), "down4": (3, 2), "up1": (0, 3), "up2": (1, 4)}


def _medformer_stage_name(stage: str, tail: str) -> str | None:
    position, site = _MEDFORMER_STAGES[stage]
    part = "encoder" if stage.startswith("down") else "decoder"
    block = re.fullmatch(r"trans_blocks\.blocks\.(\d+)\.(.+)", tail)
    if block:
        inner = _apply(_BLOCK_PARTS, block[2])
        return None if inner is None else f"fusion.{site}.blocks.{block[1]}.{inner}"
    rules: Rules = [
        (r"prior_selection\.(task_prior|modality_prior)", lambda m: f"fusion.{site}.{m[1]}"),
        (r"patch_merging\.(.+)", lambda m: f"{part}.{position}.merge.{m[1]}"),
        (r"map_gen\.base_proj\.(.+)", lambda m: f"{part}.{position}.semantic_map.features.{m[1]}"),
        (r"map_gen\.semantic_proj\.(.+)", lambda m: f"{part}.{position}.semantic_map.assignment.{m[1]}"),
        (r"map_reduction\.(.+)", lambda m: f"{part}.{position}.map_reduction.{m[1]}"),
    ]
    return _apply(rules, tail)


def _medformer_name(name: str) -> str:
    rules: Rules = _SHARED_RULES + [
        (r"down1\.patch_merging\.(.+)", lambda m: f"encoder.0.merge.{m[1]}"),
        (r"down1\.conv_blocks\.(.+)", lambda m: f"encoder.0.blocks.{m[1]}"),
        (r"up([34])\.conv_blocks\.(.+)", lambda m: f"decoder.{int(m[1]) - 1}.blocks.{m[2]}"),
        (r"map_fusion\.(in_proj|out_proj)\.(.+)", lambda m: f"map_fusion.{m[1]}.{m[2]}"),
        (r"map_fusion\.fusion\.layers\.(\d+)\.0\.norm\.(.+)", lambda m: f"map_fusion.layers.{m[1]}.attn.norm.{m[2]}"),
        (r"map_fusion\.fusion\.layers\.(\d+)\.0\.fn\.(.+)", lambda m: f"map_fusion.layers.{m[1]}.attn.{m[2]}"),
        (r"map_fusion\.fusion\.layers\.(\d+)\.1\.norm\.(.+)", lambda m: f"map_fusion.layers.{m[1]}.mlp.norm.{m[2]}"),
        (r"map_fusion\.fusion\.layers\.(\d+)\.1\.fn\.(.+)", lambda m: f"map_fusion.layers.{m[1]}.mlp.{m[2]}"),
        (r"out_classifier\.norm\.(.+)", lambda m: f"task_head.norm.{m[1]}"),
        (r"out_classifier\.classifier_pred\.(\d)\.(.+)", lambda m: f"task_head.mlp.{m[1]}.{m[2]}"),
        (r"aux_classifier\.norm\.(.+)", lambda m: f"aux_head.norm.{m[1]}"),
        (r"aux_classifier\.classifier_pred\.(\d)\.(.+)", lambda m: f"aux_head.mlp.{m[1]}.{m[2]}"),
    ]
    renamed = _apply(rules, name)
    stage, _, tail = name.partition(".")
    if renamed is None and stage in _MEDFORMER_STAGES:
        renamed = _medformer_stage_name(stage, tail)
    if renamed is None:
        raise KeyError(f"'{name}' is not a parameter of the published Hermes-M network")
    return renamed
