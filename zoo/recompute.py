"""Moved to `zoo.kernels.recompute` (the CPU kernels); this path keeps working."""

from zoo.kernels.recompute import RecomputingConv2D, batch_norm_relu_source

__all__ = ["RecomputingConv2D", "batch_norm_relu_source"]
