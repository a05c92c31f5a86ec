"""Moved to `zoo.kernels.composed` (the CPU kernels); this path keeps working."""

from zoo.kernels.composed import (
    LinearOp,
    apply,
    convolve,
    fold_input,
    from_conv1x1,
    split_input_channels,
    through_conv,
    through_transposed,
)

__all__ = ["LinearOp", "apply", "convolve", "fold_input", "from_conv1x1",
           "split_input_channels", "through_conv", "through_transposed"]
