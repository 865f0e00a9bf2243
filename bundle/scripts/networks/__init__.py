"""Hermes networks: Hermes-R (ResUNet backbone) and Hermes-M (MedFormer backbone), chosen by a backbone id."""

from ..checkpoint_names import BACKBONE_NAMES
from ..errors import SetupError
from .base import HermesNetwork
from .hermes import HermesResUNet
from .medformer import HermesMedFormer

#: Backbone id (configs' ``backbone``, the converter's ``--backbone``) -> network class.
BACKBONES = {"r": HermesResUNet, "m": HermesMedFormer}


def backbone_class(backbone: str) -> type:
    """The network class of a backbone id; the configs' ``network_def`` builds it."""
    key = str(backbone).strip().lower()
    if key not in BACKBONES:
        choices = ", ".join(f"'{k}' = {BACKBONE_NAMES[k]}" for k in BACKBONES)
        raise SetupError(f"--backbone: unknown backbone '{backbone}' (choose {choices})")
    return BACKBONES[key]


__all__ = ["BACKBONES", "HermesMedFormer", "HermesNetwork", "HermesResUNet", "backbone_class"]
