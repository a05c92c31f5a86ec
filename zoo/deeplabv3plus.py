"""DeepLabv3+ as the 2018 Gordon Bell climate runs used it.

Reference:
    Kurth et al., "Exascale Deep Learning for Climate Analytics", SC18
    (arXiv:1810.01993); Chen et al., "Encoder-Decoder with Atrous Separable
    Convolution for Semantic Image Segmentation" (arXiv:1802.02611).
"""

import functools
import math
import re

import numpy as np
import tensorflow as tf
from official.vision.modeling.decoders import aspp as tfm_aspp

from zoo import _common, composed
from zoo.periodic import (
    AtrousConv2D,
    BilinearUpsampling2D,
    LongitudePadding2D,
    SubpixelConv2DTranspose,
    conv2d,
    conv2d_transpose,
    longitude_pad,
    wrap_longitude,
)
from zoo.recompute import RecomputingConv2D

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
                    # tf-models-official makes Keras Conv2Ds; run them as ours.
                    layer.convolution_op = functools.partial(AtrousConv2D.convolution_op, layer)

    def get_config(self):
        return {**super().get_config(), "periodic_padding": self.periodic_padding}


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
            # A stride-1 unit's conv pads by itself ("same"): no padded copy of
            # its input is kept for the backward pass. Strided units keep the
            # explicit, symmetric padding ("same" would pad 0 before, 1 after).
            pads_itself = stride == 1 and not periodic
            if unit[3] == "pad":
                if pads_itself:
                    return tf.keras.layers.Identity(name=layer.name)
                pad_cls = LongitudePadding2D if periodic else tf.keras.layers.ZeroPadding2D
                return pad_cls(rate, name=layer.name)
            config.update(strides=(stride, stride), dilation_rate=(rate, rate),
                          padding="same" if pads_itself else "valid")
            return RecomputingConv2D.from_config(config)
        elif re.fullmatch(r"conv\d_block\d+_[013]_conv", layer.name):
            return RecomputingConv2D.from_config(config)
        elif isinstance(layer, tf.keras.layers.ZeroPadding2D) and periodic:
            return LongitudePadding2D(config["padding"], name=layer.name)
        elif isinstance(layer, tf.keras.layers.MaxPooling2D) and layer.pool_size == (1, 1):
            # An identity shortcut that subsamples: it follows block B-1's
            # output; give it a stable name and the stride of unit B.
            previous = layer._inbound_nodes[0].inbound_layers.name
            stage, block = re.fullmatch(r"(conv\d)_block(\d+)_out", previous).groups()
            stride = plan[stage, int(block) + 1][0]
            name = f"{stage}_block{int(block) + 1}_0_pool"
            if stride == 1:  # A 1x1 pooling of stride 1 would only copy its input.
                return tf.keras.layers.Identity(name=name)
            config.update(strides=(stride, stride), name=name)
        return layer.__class__.from_config(config)

    net = tf.keras.models.clone_model(base, clone_function=clone)
    return net.input, {key: net.get_layer(name).output for key, name in ENDPOINTS.items()}


def _conv_bn_relu(x, filters, kernel_size, name, periodic, dilation_rate=1):
    x = conv2d(x, filters, kernel_size, dilation_rate=dilation_rate, use_bias=False,
               periodic=periodic, name=f"{name}_conv")
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)


def _along(x, axis, start, stop):
    """x[start:stop] along `axis` of a 4D tensor."""
    index = [slice(None)] * 4
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _ends(x, axis, count):
    """The first and the last `count` pixels of `x` along `axis`, stacked in the batch."""
    return tf.concat([_along(x, axis, 0, count), _along(x, axis, x.shape[axis] - count, None)], 0)


def _add_ends(total, ends, axis, count):
    """`total` plus `ends` (as `_ends(total, axis, count)` takes them) where they came from."""
    start, end = tf.split(ends, 2, axis=0)
    size = total.shape[axis]
    ranges = ([tf.range(tf.shape(total)[0])] + [tf.range(total.shape[d]) for d in range(1, axis)]
              + [tf.constant(np.r_[0:count, size - count:size], tf.int32)])
    index = tf.stack(tf.meshgrid(*ranges, indexing="ij"), axis=-1)
    updates = tf.concat([start, end], axis=axis)
    return tf.tensor_scatter_nd_add(total, tf.reshape(index, [-1, axis + 1]),
                                    tf.reshape(updates, [-1, *total.shape[axis + 1:]]))


def _with_ends(x, count, axes):
    """`x` and `_ends(x, axis, count)` for each of `axes`.

    The gradient adds the ends' gradients into `x`'s in place (a scatter-add
    of the strips) instead of slicing's gradient: a zero-filled tensor the size
    of `x` per slice, then their sum (at 768x1152, 4 x 57 MB, 50 to 155 ms each).
    """

    @tf.custom_gradient
    def with_ends(x):
        def gradient(total, *ends):
            for axis, grad in zip(axes, ends, strict=True):
                total = _add_ends(total, grad, axis, count)
            return total

        return (tf.identity(x), *(_ends(x, axis, count) for axis in axes)), gradient

    return with_ends(x)


def _nearest_edges(x, axis, count):
    """The `count` pixels along `axis` nearest the edge of each strip, as (start,
    end): the first ones of the start strips (first half of the batch), the last
    ones of the end strips (second half)."""
    start, end = tf.split(x, 2, axis=0)
    return _along(start, axis, 0, count), _along(end, axis, end.shape[axis] - count, None)


def _nearest_edge(x, axis, count):
    """`_nearest_edges` as one batch again."""
    return tf.concat(_nearest_edges(x, axis, count), 0)


def _tap_sum_kernel(classes):
    """(3, 3, 9 classes, classes): out[p] = sum over taps t of x[p + t][t, :]."""
    kernel = np.einsum("tu,oc->tuoc", np.eye(9), np.eye(classes))
    return tf.constant(kernel.reshape(3, 3, 9 * classes, classes), tf.float32)


# The composed decoder tail differs from the layered chain in TAIL_BORDER
# output rows (and columns without periodic padding) at each edge
# (test_zoo_composed measures how many); those come from the layers on thin
# strips at the edge: TAIL_STRIP // 4 rows of the stride-4 features,
# TAIL_BORDER + 4 input rows, each layer only as far as the next one needs.
TAIL_BORDER = 3
TAIL_STRIP = 8


@tf.keras.utils.register_keras_serializable(package="climseg")
class DeconvDecoderTail(tf.keras.layers.Layer):
    """The linear end of the "deconv1x" decoder, from stride 4 to the logits.

    The paper's decoder has no activation after its second fusion conv at
    stride 4: two 3x3 stride-2 transposed convolutions to full resolution,
    a two-conv skip from the input, concatenation, two 3x3 convolutions and
    the 1x1 logits are one affine map of (stride-4 features, input). Layered,
    it is ~80% of the network's FLOPs and most of its activation memory (256-
    and 384-channel maps at full resolution).

    With `composed=True` (the default) the layers' kernels are composed
    (`zoo.composed`) into two convolutions straight to the 3 logit channels,
    both on the stride-4 grid: 256 channels to 16 x 3 sub-pixel outputs, and
    the input in 4x4 blocks (256 channels) to the same outputs. The border
    rows and columns, where the chain's zero padding of intermediate maps
    matters, come from the layers on thin strips (`_edges`). Same variables,
    same outputs and gradients up to float rounding; `composed=False` runs
    the layered chain (the FLOP count of the architecture is measured on it).

    Args:
        num_classes: output channels.
        periodic: wrap around in longitude. Defaults to `False`.
        composed: compute as composed convolutions. Defaults to `True`.
        **kwargs: passed on to `keras.layers.Layer`.
    """

    def __init__(self, num_classes, periodic=False, composed=True, **kwargs):
        kwargs.pop("autocast", None)
        kwargs.setdefault("dtype", "float32")  # Compose from float32 variable values.
        super().__init__(autocast=False, **kwargs)
        self.num_classes = int(num_classes)
        self.periodic = bool(periodic)
        self.composed = bool(composed)
        padding = "valid" if self.periodic else "same"
        init = dict(kernel_initializer="he_uniform")
        self.deconv_x2 = SubpixelConv2DTranspose(256, periodic=self.periodic,
                                                 name="decoder_deconv_x2", **init)
        self.deconv_x1 = SubpixelConv2DTranspose(256, periodic=self.periodic,
                                                 name="decoder_deconv_x1", **init)
        self.convs = {
            name: tf.keras.layers.Conv2D(filters, 3, padding=padding, name=f"decoder_{name}",
                                         **init)
            for name, filters in (("skip_conv1", 64), ("skip_conv2", 128),
                                  ("fuse_conv1", 256), ("fuse_conv2", 256))
        }
        self.logits = tf.keras.layers.Conv2D(self.num_classes, 1, name="decoder_logits")

    def build(self, input_shape):
        features, image = (tf.TensorShape(shape) for shape in input_shape)

        def channels(count):
            return tf.TensorShape([None, None, None, count])

        with tf.name_scope(self.deconv_x2.name):
            self.deconv_x2.build(features)
        with tf.name_scope(self.deconv_x1.name):
            self.deconv_x1.build(channels(self.deconv_x2.filters))
        previous = image[-1]
        for layer in (*self.convs.values(), self.logits):
            if layer.name == "decoder_fuse_conv1":
                previous = self.deconv_x1.filters + self.convs["skip_conv2"].filters
            with tf.name_scope(layer.name):  # Weight names "decoder_.../kernel:0".
                layer.build(channels(previous))
            previous = layer.filters
        super().build(input_shape)

    def _conv(self, name, x):
        if self.periodic:
            x = longitude_pad(x, ((1, 1), (1, 1)))
        return self.convs[name](x)

    def _layered(self, features, image):
        """The chain layer by layer."""
        x = self.deconv_x1(self.deconv_x2(features))
        skip = self._conv("skip_conv2", self._conv("skip_conv1", image))
        x = tf.concat([x, tf.cast(skip, x.dtype)], axis=-1)
        return self.logits(self._conv("fuse_conv2", self._conv("fuse_conv1", x)))

    def _edge_convs(self, head):
        """The two convs that end `_edges`: (kernel, bias) of fuse_conv1 with the
        head's 3x3 taps composed into it, 384 -> 27 (tap, class) channels, and of
        the sum of each pixel's 9 neighbours' own tap plus the head's bias."""
        fuse = self.convs["fuse_conv1"]
        taps = tf.reshape(head.kernel, [3, 3, -1, self.num_classes])  # (a, b, 256, classes)
        kernel = tf.einsum("xyim,abmo->xyiabo", tf.convert_to_tensor(fuse.kernel), taps)
        per_tap = 9 * self.num_classes
        return ((tf.reshape(kernel, [3, 3, -1, per_tap]),
                 tf.reshape(tf.einsum("m,abmo->abo", fuse.bias, taps), [per_tap])),
                (_tap_sum_kernel(self.num_classes), tf.reshape(head.bias, [-1])))

    def _edges(self, feature_ends, image, convs, axis):
        """The TAIL_BORDER output pixels at both ends of `axis` (1: rows, 2: columns),
        from the features' TAIL_STRIP // 4 pixels at each end (`_ends`); `convs`:
        `_edge_convs(head)`.

        The chain runs on thin strips at the two ends, both as one batch (the
        tail has no batch norm), each map only as far from the edge as the next
        layer needs it: fuse_conv1 reads TAIL_BORDER + 2 pixels, made from
        (TAIL_BORDER + 4) // 2 half-resolution pixels (the transposed conv is
        right from the edge up to there) and TAIL_BORDER + 4 input pixels (two
        "same" 3x3 convs). fuse_conv1 and `head` (fuse_conv2 and the logits),
        the bulk of the FLOPs, run as two small convs: the head's 3x3 taps
        composed into fuse_conv1, 384 -> 27 (tap, class) channels on the
        TAIL_BORDER + 1 pixels nearest the edge; then each output pixel sums
        its 9 neighbours' own tap, with zeros beyond the image where the chain
        pads fuse_conv1's output.
        """
        border = TAIL_BORDER
        x = self.deconv_x2(feature_ends)
        x = self.deconv_x1(_nearest_edge(x, axis, (border + 4) // 2))
        skip = self._conv("skip_conv2", self._conv("skip_conv1", _ends(image, axis, border + 4)))
        x = tf.concat([_nearest_edge(x, axis, border + 2),
                       tf.cast(_nearest_edge(skip, axis, border + 2), x.dtype)], axis=-1)
        (fuse_kernel, fuse_bias), (sum_kernel, sum_bias) = convs
        x = self._edge_conv(x, axis, border + 2, fuse_kernel, fuse_bias)
        x = self._edge_conv(x, axis, border + 1, sum_kernel, sum_bias)
        return tf.split(x, 2, axis=0)

    def _edge_conv(self, x, axis, keep, kernel, bias):
        """A 3x3 conv of the `keep` pixels nearest the edge of the start (first
        half of the batch) and end strips: `keep - 1` pixels out along `axis`;
        across it, padded as the layers pad."""
        start, end = _nearest_edges(x, axis, keep)
        before, after = [[0, 0]] * 4, [[0, 0]] * 4
        before[axis], after[axis] = [1, 0], [0, 1]
        x = tf.concat([tf.pad(start, before), tf.pad(end, after)], 0)
        if axis == 1 and self.periodic:
            x = longitude_pad(x, ((0, 0), (1, 1)))
        else:
            across = [[0, 0]] * 4
            across[3 - axis] = [1, 1]
            x = tf.pad(x, across)
        out = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 1, "VALID")
        return tf.nn.bias_add(out, tf.cast(bias, x.dtype))

    @staticmethod
    def _through(op, layer):
        """`op` pulled back through the conv or transposed conv `layer`."""
        kernel = tf.convert_to_tensor(layer.kernel)
        if isinstance(layer, SubpixelConv2DTranspose):  # Keras' (3, 3, out, in) order.
            return composed.through_transposed(op, tf.transpose(kernel, [0, 1, 3, 2]),
                                               layer.bias)
        return composed.through_conv(op, kernel, layer.bias)

    def _head_op(self):
        """The `zoo.composed.LinearOp` of the last 3x3 conv and the 1x1 logits."""
        logits = composed.from_conv1x1(tf.convert_to_tensor(self.logits.kernel),
                                       self.logits.bias)
        return self._through(logits, self.convs["fuse_conv2"])

    def composed_ops(self, head=None):
        """The `zoo.composed.LinearOp`s from the features and from the input.

        Args:
            head: `_head_op()`, if already computed.
        """
        op = self._through(self._head_op() if head is None else head,
                           self.convs["fuse_conv1"])
        from_features, from_skip = composed.split_input_channels(
            op, [self.deconv_x1.filters, self.convs["skip_conv2"].filters])
        from_features = self._through(self._through(from_features, self.deconv_x1),
                                      self.deconv_x2)
        from_image = self._through(self._through(from_skip, self.convs["skip_conv2"]),
                                   self.convs["skip_conv1"])
        return from_features, from_image

    def _fits(self, features, image):
        height, width = image.shape[1], image.shape[2]
        if height is None or width is None:
            return False
        if height % 4 or width % 4:  # The features' grid is the input's in 4x4 blocks.
            return False
        return height >= 2 * TAIL_STRIP and (self.periodic or width >= 2 * TAIL_STRIP)

    def _composed(self, features, image):
        dtype = self.logits.compute_dtype
        head = self._head_op()  # Shared by the composed map and the border strips.
        from_features, from_image = self.composed_ops(head)
        height, width = image.shape[1], image.shape[2]
        axes = (1,) if self.periodic else (1, 2)
        features, *feature_ends = _with_ends(features, TAIL_STRIP // 4, axes)
        convs = self._edge_convs(head)  # Shared by the rows' and the columns' edges.
        edges = {axis: [tf.cast(edge, dtype) for edge in self._edges(ends, image, convs, axis)]
                 for axis, ends in zip(axes, feature_ends, strict=True)}
        # The input's 9x9 conv to the classes runs on 4x4 blocks of the input, as a
        # 3x3 conv 256 -> 48 on the features' grid (3x faster than 16 -> 3 at full
        # size), summed with the features' conv before the one sub-pixel shuffle.
        from_image = composed.fold_input(from_image, from_features.factor)
        image_blocks = tf.nn.space_to_depth(image, from_features.factor)
        out = (composed.convolve(from_features, features, self.periodic)
               + tf.cast(composed.convolve(from_image, image_blocks, self.periodic),
                         features.dtype))
        out = tf.cast(tf.nn.depth_to_space(out, from_features.factor), dtype)
        b = TAIL_BORDER
        if not self.periodic:
            left, right = edges[2]
            out = tf.concat([left[:, b:height - b], out[:, b:height - b, b:width - b],
                             right[:, b:height - b]], axis=2)
        else:
            out = out[:, b:height - b]
        top, bottom = edges[1]
        return tf.concat([top, out, bottom], axis=1)

    def call(self, inputs):
        features, image = inputs
        if self.composed and self._fits(features, image):
            return self._composed(features, image)
        return self._layered(features, image)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tf.TensorShape(input_shape[1]).as_list()
        return tf.TensorShape([batch, height, width, self.num_classes])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "periodic": self.periodic, "composed": self.composed}


def _deconv1x_decoder(inputs, low_level, x, num_classes, output_stride, periodic, compose_tail):
    """The paper's "deconv1x" decoder, to full resolution with an input skip.

    As in the paper's code, the transposed convolutions and the convolutions
    after the input skip have biases and no activation; only the two fusion
    convolutions at stride 4 have batch norm and ReLU (so everything after
    them is `DeconvDecoderTail`, one affine map).
    """
    deconv = dict(kernel_initializer="he_uniform", periodic=periodic)
    for i in range(int(math.log2(output_stride // 4))):
        x = conv2d_transpose(x, 256, 3, name=f"decoder_aspp_deconv{i + 1}", **deconv)
    low_level = _conv_bn_relu(low_level, 48, 1, "decoder_low_level", periodic)
    x = tf.keras.layers.Concatenate(name="decoder_concat_low_level")([x, low_level])
    x = _conv_bn_relu(x, 256, 3, "decoder_conv1", periodic)
    x = _conv_bn_relu(x, 256, 3, "decoder_conv2", periodic)
    return DeconvDecoderTail(num_classes, periodic=periodic, composed=compose_tail,
                             name="decoder_tail")([x, inputs])


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
    compose_decoder_tail=True,
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

    For speed and memory on CPU (same variables and results): the atrous
    convolutions (ResNet and ASPP) run with tf.nn.conv2d's native dilation
    rather than Keras' SpaceToBatchND path (`zoo.periodic.AtrousConv2D`), the
    stride-1 ResNet units pad inside their convolution rather than by a
    padding layer (without periodic padding), and the 3x3 stride-2 transposed
    convolutions run as four phase convolutions
    (`zoo.periodic.SubpixelConv2DTranspose`).

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
                              periodic_padding, compose_decoder_tail)
    else:
        x = _bilinear_decoder(endpoints["low_level"], x, num_classes, output_stride,
                              periodic_padding)
    model = tf.keras.Model(inputs, _common.float32_logits(x), name="deeplabv3plus")
    return _common.load_weights(model, weights)
