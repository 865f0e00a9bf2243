"""Hermes networks."""

from .hermes import HermesResUNet

__all__ = ["HermesResUNet"]
