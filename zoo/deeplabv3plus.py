"""DeepLabv3+ as the 2018 Gordon Bell climate runs used it.

Reference:
    Kurth et al., "Exascale Deep Learning for Climate Analytics", SC18
    (arXiv:1810.01993); Chen et al., "Encoder-Decoder with Atrous Separable
    Convolution for Semantic Image Segmentation" (arXiv:1802.02611).
"""

import math
import re

import tensorflow as tf
from official.vision.modeling.decoders import aspp as tfm_aspp

from zoo import _common
from zoo.periodic import (
    BilinearUpsampling2D,
    LongitudePadding2D,
    conv2d,
    conv2d_transpose,
    wrap_longitude,
)

OUTPUT_STRIDES = (8, 16)
DECODERS = ("deconv1x", "bilinear")

# ResNet-v2-50 units per stage and the stride of each unit (stride on the
# last unit of a stage, as in TF-slim and tf-keras applications).
_RESNET50_UNITS = {"conv2": (1, 1, 2), "conv3": (1, 1, 1, 2), "conv4": (1,) * 5 + (2,),
                   "conv5": (1, 1, 1)}

# Feature taps of the encoder, by layer name of tf-keras' ResNet50V2.
# low_level: TF-slim "block1/unit_3/bottleneck_v2/conv1" (stride 4, 64 ch),
# encoder: "block4", the last unit's output before the final norm.
ENDPOINTS = {"low_level": "conv2_block3_1_relu", "encoder": "conv5_block3_out"}


@tf.keras.utils.register_keras_serializable(package="climseg")
class ASPP(tfm_aspp.ASPP):
    """tf-models-official's ASPP, optionally periodic in longitude.

    Adds one argument to `official.vision.modeling.decoders.ASPP`:

    Args:
        periodic_padding: make the atrous convolutions wrap around in width.
            Defaults to `False`.
        **kwargs: passed on to tf-models-official's `ASPP` (`level`,
            `dilation_rates`, `num_filters`, ...).
    """

    def __init__(self, periodic_padding=False, **kwargs):
        super().__init__(**kwargs)
        self.periodic_padding = bool(periodic_padding)

    def build(self, input_shape):
        super().build(input_shape)
        # The pyramid creates its convolutions in its own build; build it now
        # so that they exist to be converted before the first call.
        shape = input_shape[str(self._config_dict["level"])] if isinstance(
            input_shape, dict) else input_shape
        self.aspp.build(tf.TensorShape(shape))
        self.aspp.built = True
        if self.periodic_padding:
            wrap_longitude(self.aspp)
        else:
            for layer in self.aspp._flatten_layers(include_self=False, recursive=True):
                if isinstance(layer, tf.keras.layers.Conv2D) and max(layer.dilation_rate) > 1:
                    layer.convolution_op = _native_dilated_convolution_op(layer)

    def get_config(self):
        return {**super().get_config(), "periodic_padding": self.periodic_padding}


def _native_dilated_convolution_op(layer):
    """The same "same" atrous convolution, run by tf.nn.conv2d's native dilation.

    Keras goes through tf.nn.convolution, which on CPU implements dilation
    with SpaceToBatchND: for rates of 12 to 36 on small maps it pads to a
    multiple of the rate and runs many tiny convolutions, about 10x slower
    than oneDNN's dilated convolution (measured: rate 36, 24x36x512 map).
    """

    def convolution_op(inputs, kernel):
        return tf.nn.conv2d(inputs, kernel, strides=list(layer.strides), padding="SAME",
                            dilations=list(layer.dilation_rate))

    return convolution_op


def aspp_rates(output_stride):
    """Atrous rates of the ASPP: (6, 12, 18) at stride 16, doubled at stride 8."""
    return [rate * 16 // output_stride for rate in (6, 12, 18)]


def _unit_plan(output_stride):
    """(stride, dilation) of the 3x3 conv of each ResNet unit for `output_stride`.

    As TF-slim's `stack_blocks_dense`: once the target stride is reached,
    strides become 1 and later units dilate by the skipped stride.
    """
    current, target, rate, plan = 4, output_stride, 1, {}
    for stage, strides in _RESNET50_UNITS.items():
        for block, stride in enumerate(strides, start=1):
            if current == target:
                plan[stage, block] = (1, rate)
                rate *= stride
            else:
                plan[stage, block] = (stride, 1)
                current *= stride
    return plan


def _resnet50v2(input_shape, output_stride, periodic):
    """tf-keras' ResNet50V2, re-wired to `output_stride` and periodic padding.

    Returns the input tensor and a dict of endpoint tensors (`ENDPOINTS`).
    """
    base = tf.keras.applications.ResNet50V2(
        include_top=False, weights=None, input_shape=input_shape
    )
    plan = _unit_plan(output_stride)

    def clone(layer):
        config = layer.get_config()
        unit = re.fullmatch(r"(conv\d)_block(\d+)_2_(pad|conv)", layer.name)
        if unit:
            stride, rate = plan[unit[1], int(unit[2])]
            if unit[3] == "pad":
                pad_cls = LongitudePadding2D if periodic else tf.keras.layers.ZeroPadding2D
                return pad_cls(rate, name=layer.name)
            config.update(strides=(stride, stride), dilation_rate=(rate, rate))
        elif isinstance(layer, tf.keras.layers.ZeroPadding2D) and periodic:
            return LongitudePadding2D(config["padding"], name=layer.name)
        elif isinstance(layer, tf.keras.layers.MaxPooling2D) and layer.pool_size == (1, 1):
            # An identity shortcut that subsamples: it follows block B-1's
            # output; give it a stable name and the stride of unit B.
            previous = layer._inbound_nodes[0].inbound_layers.name
            stage, block = re.fullmatch(r"(conv\d)_block(\d+)_out", previous).groups()
            stride = plan[stage, int(block) + 1][0]
            config.update(strides=(stride, stride), name=f"{stage}_block{int(block) + 1}_0_pool")
        return layer.__class__.from_config(config)

    net = tf.keras.models.clone_model(base, clone_function=clone)
    return net.input, {key: net.get_layer(name).output for key, name in ENDPOINTS.items()}


def _conv_bn_relu(x, filters, kernel_size, name, periodic, dilation_rate=1):
    x = conv2d(x, filters, kernel_size, dilation_rate=dilation_rate, use_bias=False,
               periodic=periodic, name=f"{name}_conv")
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)


def _deconv1x_decoder(inputs, low_level, x, num_classes, output_stride, periodic):
    """The paper's "deconv1x" decoder, to full resolution with an input skip.

    As in the paper's code, the transposed convolutions and the convolutions
    after the input skip have biases and no activation; only the two fusion
    convolutions at stride 4 have batch norm and ReLU.
    """
    deconv = dict(kernel_initializer="he_uniform", periodic=periodic)
    for i in range(int(math.log2(output_stride // 4))):
        x = conv2d_transpose(x, 256, 3, name=f"decoder_aspp_deconv{i + 1}", **deconv)
    low_level = _conv_bn_relu(low_level, 48, 1, "decoder_low_level", periodic)
    x = tf.keras.layers.Concatenate(name="decoder_concat_low_level")([x, low_level])
    x = _conv_bn_relu(x, 256, 3, "decoder_conv1", periodic)
    x = _conv_bn_relu(x, 256, 3, "decoder_conv2", periodic)
    x = conv2d_transpose(x, 256, 3, name="decoder_deconv_x2", **deconv)
    x = conv2d_transpose(x, 256, 3, name="decoder_deconv_x1", **deconv)
    skip = conv2d(inputs, 64, 3, name="decoder_skip_conv1", **deconv)
    skip = conv2d(skip, 128, 3, name="decoder_skip_conv2", **deconv)
    x = tf.keras.layers.Concatenate(name="decoder_concat_skip")([x, skip])
    x = conv2d(x, 256, 3, name="decoder_fuse_conv1", **deconv)
    x = conv2d(x, 256, 3, name="decoder_fuse_conv2", **deconv)
    return tf.keras.layers.Conv2D(num_classes, 1, name="decoder_logits")(x)


def _bilinear_decoder(low_level, x, num_classes, output_stride, periodic):
    """The standard DeepLabv3+ decoder: bilinear upsampling x(stride/4), then x4."""
    x = BilinearUpsampling2D(output_stride // 4, periodic=periodic, name="decoder_upsample1")(x)
    low_level = _conv_bn_relu(low_level, 48, 1, "decoder_low_level", periodic)
    x = tf.keras.layers.Concatenate(name="decoder_concat_low_level")([x, low_level])
    x = _conv_bn_relu(x, 256, 3, "decoder_conv1", periodic)
    x = _conv_bn_relu(x, 256, 3, "decoder_conv2", periodic)
    x = tf.keras.layers.Conv2D(num_classes, 1, name="decoder_logits")(x)
    return BilinearUpsampling2D(4, periodic=periodic, name="decoder_upsample2")(x)


def deeplabv3plus(
    input_shape=(768, 1152, 16),
    num_classes=3,
    weights=None,
    output_stride=8,
    decoder="deconv1x",
    periodic_padding=False,
):
    """Builds DeepLabv3+ with a ResNet-v2-50 encoder, as in the SC18 paper.

    The encoder is tf-keras' `ResNet50V2` (no pretrained weights; the 16
    input channels go straight into the stem), re-wired by layer name for
    `output_stride` as TF-slim does (strides replaced by dilation). The ASPP
    is tf-models-official's (1x1 conv, three 3x3 atrous convs at rates
    12/24/36 at stride 8 or 6/12/18 at stride 16, image pooling, 256 channels).
    The default "deconv1x" decoder is the one of the paper's large runs: the
    ASPP output is deconvolved to stride 4, fused with 48 low-level channels,
    deconvolved twice to full resolution and fused with a two-conv skip from
    the input. "bilinear" is the standard DeepLabv3+ decoder.

    Differences from the paper's network: batch norm is on (ResNet, ASPP and
    the two fusion convs, as the paper's code with `batchnorm=True`); weight
    decay is left to the training setup. Without batch-norm variables the
    default configuration has exactly the paper code's 43,669,251 parameters.

    For speed on CPU (same variables and results): the ASPP's atrous
    convolutions run with tf.nn.conv2d's native dilation rather than Keras'
    SpaceToBatchND path, and the 3x3 stride-2 transposed convolutions as four
    phase convolutions (`zoo.periodic.SubpixelConv2DTranspose`).

    Args:
        input_shape: (height, width, channels); height and width multiples of
            `output_stride`, or None. Defaults to `(768, 1152, 16)`.
        num_classes: number of classes. Defaults to `3`.
        weights: None, or a checkpoint path (`.weights.h5`, `.keras` or TF
            checkpoint) loaded after the model is built. Defaults to `None`.
        output_stride: 8 or 16. Defaults to `8`.
        decoder: "deconv1x" or "bilinear". Defaults to `"deconv1x"`.
        periodic_padding: wrap convolutions around in longitude (width).
            Defaults to `False`.

    Returns:
        An uncompiled `keras.Model` from (batch, H, W, C) inputs to
        (batch, H, W, num_classes) float32 logits.

    Example:
        >>> model = deeplabv3plus(input_shape=(64, 96, 16))
        >>> model.output_shape
        (None, 64, 96, 3)
    """
    _common.check_choice(output_stride, OUTPUT_STRIDES, "output_stride")
    _common.check_choice(decoder, DECODERS, "decoder")
    input_shape = _common.check_input_shape(input_shape, output_stride)
    _common.check_positive_int(num_classes, "num_classes")
    _common.check_weights(weights)

    inputs, endpoints = _resnet50v2(input_shape, output_stride, periodic_padding)
    x = ASPP(
        level=int(math.log2(output_stride)),
        dilation_rates=aspp_rates(output_stride),
        num_filters=256,
        output_tensor=True,
        periodic_padding=periodic_padding,
        name="aspp",
    )(endpoints["encoder"])
    if decoder == "deconv1x":
        x = _deconv1x_decoder(inputs, endpoints["low_level"], x, num_classes, output_stride,
                              periodic_padding)
    else:
        x = _bilinear_decoder(endpoints["low_level"], x, num_classes, output_stride,
                              periodic_padding)
    model = tf.keras.Model(inputs, _common.float32_logits(x), name="deeplabv3plus")
    return _common.load_weights(model, weights)
