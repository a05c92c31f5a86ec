"""Tiramisu (FC-DenseNet) as the 2018 Gordon Bell climate runs used it.

Reference:
    Kurth et al., "Exascale Deep Learning for Climate Analytics", SC18
    (arXiv:1810.01993); Jegou et al., "The One Hundred Layers Tiramisu: Fully
    Convolutional DenseNets for Semantic Segmentation" (arXiv:1611.09326).
"""

import tensorflow as tf

from zoo import _common
from zoo.periodic import conv2d, conv2d_transpose

# The configuration of the paper's large runs, and the default of its code.
PAPER_BLOCKS = (2, 2, 2, 4, 5)
CODE_DEFAULT = dict(blocks=(3, 3, 4, 4, 7, 7), growth_rate=16, kernel_size=3)


def _conv_unit(x, filters, kernel_size, name, dropout, batch_norm, periodic, strides=1):
    """conv -> (batch norm) -> ReLU -> dropout, the order of the paper's code."""
    x = conv2d(x, filters, kernel_size, strides=strides, kernel_initializer="he_uniform",
               periodic=periodic, name=f"{name}_conv")
    if batch_norm:
        x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = tf.keras.layers.ReLU(name=f"{name}_relu")(x)
    if dropout:
        # A stateful generator: its state is a variable that checkpoints save,
        # so a resumed run draws the same masks (tf-keras' default, TensorFlow's
        # legacy stateful ops, keeps its state where nothing can save it).
        x = tf.keras.layers.Dropout(dropout, name=f"{name}_drop", rng_type="stateful")(x)
    return x


def _dense_block(x, layers, growth_rate, kernel_size, name, **unit):
    """Returns the block output (input + new maps) and the new maps alone."""
    new = []
    for i in range(layers):
        y = _conv_unit(x, growth_rate, kernel_size, f"{name}_layer{i + 1}", **unit)
        new.append(y)
        x = tf.keras.layers.Concatenate(name=f"{name}_concat{i + 1}")([x, y])
    return x, new


def tiramisu(
    input_shape=(768, 1152, 16),
    num_classes=3,
    weights=None,
    blocks=PAPER_BLOCKS,
    growth_rate=32,
    kernel_size=5,
    initial_filters=64,
    dropout=0.2,
    batch_norm=False,
    periodic_padding=False,
):
    """Builds the Tiramisu (FC-DenseNet) of the SC18 paper.

    A `kernel_size` convolution to `initial_filters` maps, then dense blocks
    of `blocks[:-1]` layers each followed by a transition down (1x1 conv with
    stride 2), a bottleneck block of `blocks[-1]` layers, and the mirrored up
    path: a transition up (3x3 stride-2 transposed conv on the new maps of
    the previous block only), concatenation with the skip, a dense block. A
    1x1 conv gives the logits. Every conv is followed by (batch norm, off by
    default as in the paper's runs), ReLU and dropout; as in the paper's code
    dropout also follows the final 1x1 conv. The paper's code also built a
    transition down after the bottleneck whose output was never used; it is
    not built here, so the paper configuration has 7,504,835 parameters
    instead of the code's 7,801,315 (calc).

    The default of the paper's code, `CODE_DEFAULT` in this module, is
    `blocks=(3, 3, 4, 4, 7, 7), growth_rate=16, kernel_size=3`.

    Args:
        input_shape: (height, width, channels); height and width multiples of
            2 ** (len(blocks) - 1), or None. Defaults to `(768, 1152, 16)`.
        num_classes: number of classes. Defaults to `3`.
        weights: None, or a checkpoint path loaded after the model is built.
            Defaults to `None`.
        blocks: layers per dense block, the last one the bottleneck. Defaults
            to `(2, 2, 2, 4, 5)`.
        growth_rate: feature maps added by each layer. Defaults to `32`.
        kernel_size: kernel size of the convolutions in the dense blocks and
            the first conv. Defaults to `5`.
        initial_filters: maps of the first convolution. Defaults to `64`.
        dropout: dropout rate after every convolution. Defaults to `0.2`.
        batch_norm: batch norm between conv and ReLU. Defaults to `False`.
        periodic_padding: wrap convolutions around in longitude (width).
            Defaults to `False`.

    Returns:
        An uncompiled `keras.Model` from (batch, H, W, C) inputs to
        (batch, H, W, num_classes) float32 logits.

    Example:
        >>> from zoo.tiramisu import CODE_DEFAULT
        >>> model = tiramisu(input_shape=(64, 96, 16), **CODE_DEFAULT)
    """
    try:
        blocks = tuple(blocks)
    except TypeError:
        blocks = ()
    if len(blocks) < 2 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                              for b in blocks):
        raise ValueError(
            f"blocks must be at least two positive ints (layers per dense block, the last "
            f"the bottleneck); received {blocks!r}."
        )
    _common.check_positive_int(growth_rate, "growth_rate")
    _common.check_positive_int(initial_filters, "initial_filters")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int; received {kernel_size!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); received {dropout!r}.")
    input_shape = _common.check_input_shape(input_shape, 2 ** (len(blocks) - 1))
    _common.check_positive_int(num_classes, "num_classes")
    _common.check_weights(weights)

    unit = dict(dropout=dropout, batch_norm=batch_norm, periodic=periodic_padding)
    inputs = tf.keras.Input(input_shape, name="inputs")
    x = _conv_unit(inputs, initial_filters, kernel_size, "stem", **unit)

    skips = []
    for i, layers in enumerate(blocks[:-1], start=1):
        x, _ = _dense_block(x, layers, growth_rate, kernel_size, f"down{i}", **unit)
        skips.append(x)
        x = _conv_unit(x, x.shape[-1], 1, f"down{i}_transition", strides=2, **unit)
    _, new = _dense_block(x, blocks[-1], growth_rate, kernel_size, "bottleneck", **unit)

    up_blocks = zip(reversed(blocks[:-1]), reversed(skips), strict=True)
    for i, (layers, skip) in enumerate(up_blocks, start=1):
        x = tf.keras.layers.Concatenate(name=f"up{i}_new_maps")(new) if len(new) > 1 else new[0]
        x = conv2d_transpose(x, x.shape[-1], 3, kernel_initializer="he_uniform",
                             periodic=periodic_padding, name=f"up{i}_transition")
        x = tf.keras.layers.Concatenate(name=f"up{i}_concat_skip")([x, skip])
        x, new = _dense_block(x, layers, growth_rate, kernel_size, f"up{i}", **unit)

    x = tf.keras.layers.Conv2D(num_classes, 1, kernel_initializer="he_uniform",
                               name="logits_conv")(x)
    if dropout:
        x = tf.keras.layers.Dropout(dropout, name="logits_drop", rng_type="stateful")(x)
    model = tf.keras.Model(inputs, _common.float32_logits(x), name="tiramisu")
    return _common.load_weights(model, weights)
