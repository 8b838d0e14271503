"""Qwen3-VL backbone: loading, torchvision-free processor, pooling, tiny test model."""

from charfeat.backbone.model import Qwen3VLBackbone
from charfeat.backbone.processor import Qwen3VLImageTextProcessor
from charfeat.backbone.tiny import build_tiny_qwen3_vl

__all__ = ["Qwen3VLBackbone", "Qwen3VLImageTextProcessor", "build_tiny_qwen3_vl"]
