"""climseg model zoo: segmentation networks, losses and IoU metrics.

`MODELS` maps a name to a builder; `get_model(name, **kwargs)` builds one.
Every builder returns an uncompiled tf-keras `Model` from (batch, H, W, C)
inputs to (batch, H, W, num_classes) float32 logits.

Names are imported on first use: `import zoo` (and listing `zoo.MODELS`)
does not load TensorFlow.
"""

import climseg_tf
from zoo.catalog import BACKBONE_PATTERNS, MODELS

_EXPORTS = {
    "deeplabv3plus": "zoo.deeplabv3plus",
    "deeplabv3plus_tfm": "zoo.deeplabv3plus_tfm",
    "tiramisu": "zoo.tiramisu",
    **dict.fromkeys(("count_flops", "training_flops_per_sample"), "zoo.flops"),
    **dict.fromkeys(("KERNELS", "check_jit", "choose_kernels", "default_kernels"),
                    "zoo.kernels"),
    **dict.fromkeys(("LOSSES", "FocalLoss", "JaccardLoss", "WeightedCrossEntropy",
                     "class_weights", "get_loss", "training_loss"), "zoo.losses"),
    **dict.fromkeys(("ConfusionMatrixIoU", "DeepCAMIoU", "iou_metrics"), "zoo.metrics"),
    **dict.fromkeys(("BilinearUpsampling2D", "LongitudePadding2D", "SubpixelConv2DTranspose",
                     "wrap_longitude"), "zoo.periodic"),
    **dict.fromkeys(("adapt_input_channels", "load_matching_weights", "set_backbone_trainable",
                     "weights_file"), "zoo.transfer"),
}
__all__ = ["BACKBONE_PATTERNS", "MODELS", "get_model", *sorted(_EXPORTS)]
__getattr__ = climseg_tf.lazy_exports(__name__, _EXPORTS)


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
