"""climseg model zoo: segmentation networks, losses and IoU metrics.

`MODELS` maps a name to a builder; `get_model(name, **kwargs)` builds one.
Every builder returns an uncompiled tf-keras `Model` from (batch, H, W, C)
inputs to (batch, H, W, num_classes) float32 logits.
"""

import climseg_tf  # noqa: F401  (must come first: selects Keras 2 before TensorFlow loads)
from zoo.deeplabv3plus import deeplabv3plus
from zoo.deeplabv3plus_tfm import deeplabv3plus_tfm
from zoo.flops import count_flops, training_flops_per_sample
from zoo.losses import LOSSES, FocalLoss, JaccardLoss, WeightedCrossEntropy, class_weights, get_loss
from zoo.metrics import ConfusionMatrixIoU, DeepCAMIoU, iou_metrics
from zoo.periodic import (
    BilinearUpsampling2D,
    LongitudePadding2D,
    SubpixelConv2DTranspose,
    wrap_longitude,
)
from zoo.tiramisu import tiramisu
from zoo.transfer import (
    BACKBONE_PATTERNS,
    adapt_input_channels,
    load_matching_weights,
    set_backbone_trainable,
    weights_file,
)

MODELS = {
    "deeplabv3plus": deeplabv3plus,
    "tiramisu": tiramisu,
    "deeplabv3plus_tfm": deeplabv3plus_tfm,
}


def get_model(name, **kwargs):
    """Builds the model registered as `name` with the builder's `kwargs`.

    Args:
        name: a key of `MODELS`.
        **kwargs: passed on to the builder (`input_shape`, `num_classes`,
            `weights`, `periodic_padding`, ...).

    Returns:
        An uncompiled `keras.Model` producing float32 logits.

    Raises:
        ValueError: `name` is not in `MODELS`.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))}.")
    return MODELS[name](**kwargs)


__all__ = [
    "BACKBONE_PATTERNS",
    "adapt_input_channels",
    "load_matching_weights",
    "set_backbone_trainable",
    "weights_file",
    "LOSSES",
    "MODELS",
    "ConfusionMatrixIoU",
    "DeepCAMIoU",
    "FocalLoss",
    "JaccardLoss",
    "WeightedCrossEntropy",
    "class_weights",
    "count_flops",
    "get_loss",
    "iou_metrics",
    "training_flops_per_sample",
    "BilinearUpsampling2D",
    "LongitudePadding2D",
    "SubpixelConv2DTranspose",
    "deeplabv3plus",
    "deeplabv3plus_tfm",
    "get_model",
    "tiramisu",
    "wrap_longitude",
]
