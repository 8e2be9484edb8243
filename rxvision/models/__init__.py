"""The RxVision network and its layers."""

from .layers import ClassificationHead, FeaturePyramidNetwork, MultiHeadSelfAttention
from .pretrained import PretrainedWeightsError, create_backbone
from .rxvision_model import RxVisionModel, build_model

__all__ = [
    "ClassificationHead",
    "FeaturePyramidNetwork",
    "MultiHeadSelfAttention",
    "PretrainedWeightsError",
    "RxVisionModel",
    "build_model",
    "create_backbone",
]
