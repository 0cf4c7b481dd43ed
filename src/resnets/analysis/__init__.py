"""Measurements of networks: cost (FLOPs, parameters), gradient flow, layer responses, plots."""

from .flops import Complexity, StageCost, complexity, layer_macs
from .gradflow import GradFlow, gradient_flow, gradient_flow_for
from .responses import Responses, layer_responses, responses_for_checkpoints

__all__ = [
    "Complexity",
    "GradFlow",
    "Responses",
    "StageCost",
    "complexity",
    "gradient_flow",
    "gradient_flow_for",
    "layer_macs",
    "layer_responses",
    "responses_for_checkpoints",
]
