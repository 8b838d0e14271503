"""Qwen3-VL backbone: model and pooling, torchvision-free processor, tiny test model, FLOPs, revision ids."""
