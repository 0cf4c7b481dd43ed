"""Measurements of networks: cost (FLOPs, parameters), and later gradient flow and responses."""

from .flops import Complexity, StageCost, complexity, layer_macs

__all__ = ["Complexity", "StageCost", "complexity", "layer_macs"]
