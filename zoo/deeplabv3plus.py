"""DeepLabv3+ as the 2018 Gordon Bell climate runs used it.

An encoder-decoder: a ResNet-v2-50 encoder whose last stages trade stride
for dilation (output stride 8 or 16), atrous spatial pyramid pooling, and the
paper's "deconv1x" decoder back to full resolution (or the standard bilinear
one). Written with standard Keras layers; `kernels="cpu"` runs the same
network, with the same variables, on kernels measured faster on CPU
(`zoo.kernels`).

Reference:
    Kurth et al., "Exascale Deep Learning for Climate Analytics", SC18
    (arXiv:1810.01993); Chen et al., "Encoder-Decoder with Atrous Separable
    Convolution for Semantic Image Segmentation" (arXiv:1802.02611); He et
    al., "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027).
"""

import math

import tensorflow as tf

from zoo import _common
from zoo.kernels import (
    KERNELS,
    check_jit,
    check_kernels,
    decoder_tail,
    default_kernels,
    resolve_kernels,
)
from zoo.kernels.atrous import AtrousConv2D
from zoo.kernels.recompute import RecomputingConv2D
from zoo.kernels.subpixel import SubpixelConv2DTranspose
from zoo.periodic import BilinearUpsampling2D, LongitudePadding2D, conv2d, longitude_pad

__all__ = ["ASPP", "DECODERS", "DeconvDecoderTail", "ENDPOINTS", "KERNELS", "OUTPUT_STRIDES",
           "PeriodicConv2DTranspose", "aspp_rates", "check_jit", "deeplabv3plus", "default_kernels"]

OUTPUT_STRIDES = (8, 16)
DECODERS = ("deconv1x", "bilinear")

# ResNet-v2-50: (stack name, bottleneck filters, units). Each stack but the
# last subsamples by 2 in its last unit (TF-slim's and tf-keras' ResNet-v2).
_RESNET50_STACKS = (("conv2", 64, 3), ("conv3", 128, 4), ("conv4", 256, 6), ("conv5", 512, 3))

# Feature taps of the encoder, by layer name.
# low_level: TF-slim "block1/unit_3/bottleneck_v2/conv1" (stride 4, 64 ch),
# encoder: "block4", the last unit's output before the final norm.
ENDPOINTS = {"low_level": "conv2_block3_1_relu", "encoder": "conv5_block3_out"}


def aspp_rates(output_stride):
    """Atrous rates of the ASPP: (6, 12, 18) at stride 16, doubled at stride 8."""
    return [rate * 16 // output_stride for rate in (6, 12, 18)]


def _unit_plan(output_stride):
    """{(stack, unit): (stride, dilation)} of each unit's 3x3 conv for `output_stride`.

    As TF-slim's `stack_blocks_dense`: once the target stride is reached,
    strides become 1 and later units dilate by the skipped stride.
    """
    current, rate, plan = 4, 1, {}  # The stem subsamples by 4.
    for stack, _, units in _RESNET50_STACKS:
        for unit in range(1, units + 1):
            stride = 2 if unit == units and stack != "conv5" else 1
            if current == output_stride:
                plan[stack, unit] = (1, rate)
                rate *= stride
            else:
                plan[stack, unit] = (stride, 1)
                current *= stride
    return plan


def _conv_class(kernels):
    """The ResNet units' convolution layer of the kernel set."""
    return RecomputingConv2D if kernels == "cpu" else tf.keras.layers.Conv2D


def _bottleneck_v2(x, filters, stride, dilation, name, periodic, kernels, conv_shortcut=False,
                   subsampling_unit=False):
    """A pre-activation (ResNet-v2) bottleneck unit: BN-ReLU, 1x1, 3x3, 1x1, plus shortcut.

    Args:
        x: input tensor.
        filters: bottleneck width; the unit outputs `4 * filters` channels.
        stride: stride of the 3x3 conv (and of the shortcut).
        dilation: dilation rate of the 3x3 conv.
        name: layer-name prefix, e.g. "conv3_block4".
        periodic: wrap the 3x3 conv around in longitude.
        kernels: "reference" or "cpu".
        conv_shortcut: a 1x1 conv shortcut (first unit of a stack), else identity.
        subsampling_unit: the unit where the architecture subsamples (last of
            a stack): its identity shortcut is pooled by `stride`, and named
            `{name}_0_pool` whether or not the output stride made it 1.
    """
    conv = _conv_class(kernels)
    preact = tf.keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_preact_bn")(x)
    preact = tf.keras.layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = conv(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif subsampling_unit and stride > 1:
        shortcut = tf.keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    elif subsampling_unit:  # Past the output stride: nothing to subsample.
        shortcut = tf.keras.layers.Identity(name=f"{name}_0_pool")(x)
    else:
        shortcut = x

    x = conv(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = tf.keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(x)
    x = tf.keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    if periodic:
        x = LongitudePadding2D(dilation, name=f"{name}_2_pad")(x)
        padding = "valid"
    elif stride == 1 and kernels == "cpu":
        # Padded inside the convolution: no padded copy of its input is kept for
        # the backward pass. ("same" pads 0 before and 1 after for stride 2.)
        x = tf.keras.layers.Identity(name=f"{name}_2_pad")(x)
        padding = "same"
    else:
        x = tf.keras.layers.ZeroPadding2D(dilation, name=f"{name}_2_pad")(x)
        padding = "valid"
    x = conv(filters, 3, strides=stride, dilation_rate=dilation, padding=padding,
             use_bias=False, name=f"{name}_2_conv")(x)
    x = tf.keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(x)
    x = tf.keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = conv(4 * filters, 1, name=f"{name}_3_conv")(x)
    return tf.keras.layers.Add(name=f"{name}_out")([shortcut, x])


def _stack_v2(x, name, filters, units, plan, periodic, kernels):
    """`units` bottleneck units named `{name}_block1`, ...; strides and dilations from `plan`."""
    for unit in range(1, units + 1):
        stride, dilation = plan[name, unit]
        x = _bottleneck_v2(x, filters, stride, dilation, f"{name}_block{unit}", periodic, kernels,
                           conv_shortcut=unit == 1,
                           subsampling_unit=unit == units and name != "conv5")
    return x


def _resnet50v2(inputs, output_stride, periodic, kernels):
    """The ResNet-v2-50 encoder at `output_stride`: a dict of endpoint tensors (`ENDPOINTS`).

    As tf-keras' `ResNet50V2` without the top and its final norm (no
    pretrained weights; the input channels go straight into the stem).
    """
    pad = LongitudePadding2D if periodic else tf.keras.layers.ZeroPadding2D
    x = pad(3, name="conv1_pad")(inputs)
    x = tf.keras.layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = pad(1, name="pool1_pad")(x)
    x = tf.keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    plan = _unit_plan(output_stride)
    for name, filters, units in _RESNET50_STACKS:
        x = _stack_v2(x, name, filters, units, plan, periodic, kernels)
    # Built as one graph: the taps are layers of it, found by name.
    encoder = tf.keras.Model(inputs, x)
    return {key: encoder.get_layer(name).output for key, name in ENDPOINTS.items()}


# The sublayers of `ASPP` are named as tf-models-official's ASPP, which this
# layer replaces, named them (Keras' default names in a fresh session), so that
# checkpoints keep their weight names: branch i "conv2d_i" and
# "batch_normalization_i" (i = 0 unsuffixed), image pooling 4, projection 5.
def _keras_default_name(base, index):
    return base if index == 0 else f"{base}_{index}"


@tf.keras.utils.register_keras_serializable(package="climseg")
class ASPP(tf.keras.layers.Layer):
    """Atrous spatial pyramid pooling (DeepLabv3), optionally periodic in longitude.

    Five branches of `num_filters` channels on the encoder's output: a 1x1
    conv, three 3x3 convs at `dilation_rates`, and image pooling (global
    average, 1x1 conv, spread back over the map), each conv followed by batch
    norm and ReLU; the branches are concatenated and projected by a 1x1 conv,
    batch norm and ReLU. As tf-models-official's ASPP with its defaults (no
    conv biases, "VarianceScaling" init, batch norm momentum 0.99, epsilon
    1e-3, no dropout), whose weights it keeps: the same names, shapes and order.

    Args:
        dilation_rates: the three atrous rates.
        num_filters: channels of each branch and of the output. Defaults to `256`.
        periodic_padding: wrap the atrous convolutions around in width.
            Defaults to `False`.
        kernels: "reference" or "cpu" (`zoo.kernels`). Defaults to `"reference"`.
        **kwargs: passed on to `keras.layers.Layer`.

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image
        Segmentation" (arXiv:1706.05587).
    """

    def __init__(self, dilation_rates, num_filters=256, periodic_padding=False,
                 kernels="reference", **kwargs):
        super().__init__(**kwargs)
        self.dilation_rates = [int(rate) for rate in dilation_rates]
        self.num_filters = int(num_filters)
        self.periodic_padding = bool(periodic_padding)
        self.kernels = check_kernels(kernels)

    def _conv_norm(self, index, kernel_size=1, dilation_rate=1):
        conv = tf.keras.layers.Conv2D
        if self.kernels == "cpu" and dilation_rate > 1:
            conv = AtrousConv2D
        padding = "valid" if self.periodic_padding else "same"
        return (conv(self.num_filters, kernel_size, dilation_rate=dilation_rate, padding=padding,
                     use_bias=False, kernel_initializer="VarianceScaling",
                     name=_keras_default_name("conv2d", index)),
                tf.keras.layers.BatchNormalization(
                    momentum=0.99, epsilon=1e-3,
                    name=_keras_default_name("batch_normalization", index)))

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        rates = [1, *self.dilation_rates]
        pairs = [self._conv_norm(i, 1 if rate == 1 else 3, rate) for i, rate in enumerate(rates)]
        pairs += [self._conv_norm(len(rates)), self._conv_norm(len(rates) + 1)]
        # One flat list, each branch's conv then its norm, then image pooling and
        # projection: tfm's order, that of the weights in checkpoints. (Keras'
        # `.keras` format saves the layers of a list, not those of its tuples.)
        self.pyramid = [layer for pair in pairs for layer in pair]
        inputs = [channels] * (len(rates) + 1) + [self.num_filters * (len(rates) + 1)]
        for (conv, norm), count in zip(pairs, inputs, strict=True):
            # Absolute scopes: weight names "conv2d_1/kernel:0", as tfm's were.
            with tf.name_scope(f"{conv.name}/"):
                conv.build(tf.TensorShape([None, None, None, count]))
            with tf.name_scope(f"{norm.name}/"):
                norm.build(tf.TensorShape([None, None, None, self.num_filters]))
        super().build(input_shape)

    def _branch(self, index, x, training):
        """conv -> batch norm -> ReLU of pair `index` of the pyramid."""
        conv, norm = self.pyramid[2 * index:2 * index + 2]
        pad = conv.dilation_rate[0] * (conv.kernel_size[0] - 1) // 2
        if self.periodic_padding and pad:
            x = longitude_pad(x, ((pad, pad), (pad, pad)))
        return tf.nn.relu(norm(conv(x), training=training))

    def call(self, inputs, training=None):
        count = 1 + len(self.dilation_rates)
        branches = [self._branch(i, inputs, training) for i in range(count)]
        pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
        pooled = self._branch(count, pooled, training)
        size = tf.shape(inputs)
        branches.append(tf.tile(pooled, [1, size[1], size[2], 1]))
        return self._branch(count + 1, tf.concat(branches, axis=-1), training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.num_filters])

    def get_config(self):
        return {**super().get_config(), "dilation_rates": self.dilation_rates,
                "num_filters": self.num_filters, "periodic_padding": self.periodic_padding,
                "kernels": self.kernels}

    @classmethod
    def from_config(cls, config):
        # `.keras` files of the tfm-based ASPP hold tfm's arguments too (level,
        # output_tensor, norm settings...); the values the zoo used are ours.
        known = {"dilation_rates", "num_filters", "periodic_padding", "kernels", "name",
                 "trainable", "dtype"}
        return cls(**{key: value for key, value in config.items() if key in known})


@tf.keras.utils.register_keras_serializable(package="climseg")
class PeriodicConv2DTranspose(tf.keras.layers.Conv2DTranspose):
    """Keras' 3x3, stride-2, "same" `Conv2DTranspose`, wrapped around in longitude.

    One wrapped column on each side of the input adds exactly what the border
    columns get from their neighbours across the dateline; the two output
    columns per side that the extra columns make are cropped.

    Args:
        filters: output channels.
        **kwargs: passed on to `Conv2DTranspose` (kernel size 3, stride 2 and
            "same" padding are fixed).
    """

    def __init__(self, filters, **kwargs):
        for key in ("kernel_size", "strides", "padding"):
            kwargs.pop(key, None)  # Fixed; present in configs.
        super().__init__(filters, 3, strides=2, padding="same", **kwargs)

    def call(self, inputs):
        return super().call(longitude_pad(inputs, ((0, 0), (1, 1))))[:, :, 2:-2]


def _transposed_conv(filters, name, periodic, kernels):
    """A 3x3, stride-2, "same" transposed convolution layer of the kernel set."""
    if kernels == "cpu":
        return SubpixelConv2DTranspose(filters, periodic=periodic, name=name,
                                       kernel_initializer="he_uniform")
    if periodic:
        return PeriodicConv2DTranspose(filters, name=name, kernel_initializer="he_uniform")
    return tf.keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=name,
                                           kernel_initializer="he_uniform")


@tf.keras.utils.register_keras_serializable(package="climseg")
class DeconvDecoderTail(tf.keras.layers.Layer):
    """The linear end of the "deconv1x" decoder, from stride 4 to the logits.

    Two 3x3 stride-2 transposed convolutions take the stride-4 features to
    full resolution; a skip from the input (3x3 conv to 64, 3x3 to 128) is
    concatenated; two 3x3 convolutions to 256 and a 1x1 to the classes. All
    with biases and no activation, as in the paper's code: the tail is one
    affine map of (features, input), which `kernels="cpu"` computes as two
    composed convolutions (`zoo.kernels.decoder_tail`).

    Args:
        num_classes: output channels.
        periodic: wrap around in longitude. Defaults to `False`.
        kernels: "reference" or "cpu" (`zoo.kernels`). Defaults to `"reference"`.
        **kwargs: passed on to `keras.layers.Layer`.
    """

    def __init__(self, num_classes, periodic=False, kernels="reference", **kwargs):
        kwargs.pop("autocast", None)
        kwargs.setdefault("dtype", "float32")  # Compose from float32 variable values.
        super().__init__(autocast=False, **kwargs)
        self.num_classes = int(num_classes)
        self.periodic = bool(periodic)
        self.kernels = check_kernels(kernels)
        padding = "valid" if self.periodic else "same"
        init = dict(kernel_initializer="he_uniform")
        self.deconv_x2 = _transposed_conv(256, "decoder_deconv_x2", self.periodic, self.kernels)
        self.deconv_x1 = _transposed_conv(256, "decoder_deconv_x1", self.periodic, self.kernels)
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

    def call(self, inputs):
        features, image = inputs
        if self.kernels == "cpu":
            return decoder_tail.run(self, features, image)
        return self._layered(features, image)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tf.TensorShape(input_shape[1]).as_list()
        return tf.TensorShape([batch, height, width, self.num_classes])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "periodic": self.periodic, "kernels": self.kernels}

    @classmethod
    def from_config(cls, config):
        # `.keras` files written before the kernel sets hold `composed` instead.
        config = dict(config)
        if "composed" in config:
            config["kernels"] = "cpu" if config.pop("composed") else "reference"
        return cls(**config)


def _conv_bn_relu(x, filters, kernel_size, name, periodic):
    x = conv2d(x, filters, kernel_size, use_bias=False, periodic=periodic, name=f"{name}_conv")
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)


def _deconv1x_decoder(inputs, low_level, x, num_classes, output_stride, periodic, kernels):
    """The paper's "deconv1x" decoder, to full resolution with an input skip.

    The ASPP output is deconvolved to stride 4 (3x3, stride 2, with bias, no
    activation), concatenated with 48 low-level channels, fused by two 3x3
    convs with batch norm and ReLU, then `DeconvDecoderTail`.
    """
    for i in range(int(math.log2(output_stride // 4))):
        x = _transposed_conv(256, f"decoder_aspp_deconv{i + 1}", periodic, kernels)(x)
    low_level = _conv_bn_relu(low_level, 48, 1, "decoder_low_level", periodic)
    x = tf.keras.layers.Concatenate(name="decoder_concat_low_level")([x, low_level])
    x = _conv_bn_relu(x, 256, 3, "decoder_conv1", periodic)
    x = _conv_bn_relu(x, 256, 3, "decoder_conv2", periodic)
    return DeconvDecoderTail(num_classes, periodic=periodic, kernels=kernels,
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
    kernels=None,
):
    """Builds DeepLabv3+ with a ResNet-v2-50 encoder, as in the SC18 paper.

    The encoder is ResNet-v2-50 (no pretrained weights; the 16 input channels
    go straight into the stem), with strides replaced by dilation past
    `output_stride` as TF-slim does. The ASPP has a 1x1 conv, three 3x3
    atrous convs at rates 12/24/36 at stride 8 or 6/12/18 at stride 16, and
    image pooling, 256 channels. The default "deconv1x" decoder is the one of
    the paper's large runs: the ASPP output is deconvolved to stride 4, fused
    with 48 low-level channels, deconvolved twice to full resolution and fused
    with a two-conv skip from the input. "bilinear" is the standard
    DeepLabv3+ decoder.

    Differences from the paper's network: batch norm is on (ResNet, ASPP and
    the two fusion convs, as the paper's code with `batchnorm=True`); weight
    decay is left to the training setup. Without batch-norm variables the
    default configuration has exactly the paper code's 43,669,251 parameters.

    `kernels` chooses how the layers compute, not what: "reference" runs
    standard Keras layers; "cpu" runs `zoo.kernels`' implementations measured
    faster on CPU (recomputing ResNet convs, native atrous convs with a matmul
    kernel gradient, sub-pixel transposed convs, the composed decoder tail).
    Same layers, names and variables: weights saved with one load into the
    other.

    Args:
        input_shape: (height, width, channels); height and width multiples of
            `output_stride`, or None. Defaults to `(768, 1152, 16)`.
        num_classes: number of classes. Defaults to `3`.
        weights: None, or a checkpoint path (`.weights.h5`, `.h5`, `.keras` or
            TF checkpoint) loaded after the model is built, saved with either
            kernel set. Defaults to `None`.
        output_stride: 8 or 16. Defaults to `8`.
        decoder: "deconv1x" or "bilinear". Defaults to `"deconv1x"`.
        periodic_padding: wrap convolutions around in longitude (width).
            Defaults to `False`.
        kernels: "reference", "cpu", or None for `default_kernels()`' choice
            ("cpu" without a visible GPU, else "reference"). Defaults to `None`.

    Returns:
        An uncompiled `keras.Model` from (batch, H, W, C) inputs to
        (batch, H, W, num_classes) float32 logits.

    Example:
        >>> model = deeplabv3plus(input_shape=(64, 96, 16), kernels="reference")
        >>> model.output_shape
        (None, 64, 96, 3)
    """
    _common.check_choice(output_stride, OUTPUT_STRIDES, "output_stride")
    _common.check_choice(decoder, DECODERS, "decoder")
    input_shape = _common.check_input_shape(input_shape, output_stride)
    _common.check_positive_int(num_classes, "num_classes")
    _common.check_weights(weights)
    kernels = resolve_kernels(kernels)

    inputs = tf.keras.Input(input_shape)
    endpoints = _resnet50v2(inputs, output_stride, periodic_padding, kernels)
    x = ASPP(aspp_rates(output_stride), num_filters=256, periodic_padding=periodic_padding,
             kernels=kernels, name="aspp")(endpoints["encoder"])
    if decoder == "deconv1x":
        x = _deconv1x_decoder(inputs, endpoints["low_level"], x, num_classes, output_stride,
                              periodic_padding, kernels)
    else:
        x = _bilinear_decoder(endpoints["low_level"], x, num_classes, output_stride,
                              periodic_padding)
    model = tf.keras.Model(inputs, _common.float32_logits(x), name="deeplabv3plus")
    if weights is not None and _saved_kernels(weights) not in (None, kernels):
        # Keras' `.weights.h5` format names layers by their class: a file saved
        # from the other kernel set loads into a model of that set, whose weights
        # then come over in order (the same variables).
        other = deeplabv3plus(input_shape, num_classes, weights, output_stride, decoder,
                              periodic_padding, _saved_kernels(weights))
        model.set_weights(other.get_weights())
        return model
    return _common.load_weights(model, weights)


def _saved_kernels(path):
    """The kernel set that wrote a Keras `.weights.h5` file, or None for other formats.

    The format stores each layer under its class name: the CPU kernels' ResNet
    convolutions as "recomputing_conv2d*".
    """
    if not str(path).endswith(".weights.h5"):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "cpu" if "layers/recomputing_conv2d" in f else "reference"
    except OSError:
        return None  # Not readable: loading it says so.
