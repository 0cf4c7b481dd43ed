"""Measurements of networks: cost (FLOPs, parameters), gradient flow, layer responses, where a
trained net fails (per class, calibration, worst mistakes), plots."""

from .flops import Complexity, StageCost, complexity, layer_macs
from .gradflow import GradFlow, gradient_flow, gradient_flow_for
from .mistakes import ErrorAnalysis, write_error_analysis
from .responses import Responses, layer_responses, responses_for_checkpoints

__all__ = [
    "Complexity",
    "ErrorAnalysis",
    "GradFlow",
    "Responses",
    "StageCost",
    "complexity",
    "gradient_flow",
    "gradient_flow_for",
    "layer_macs",
    "layer_responses",
    "responses_for_checkpoints",
    "write_error_analysis",
]
