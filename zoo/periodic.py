"""Periodic (longitude-wrapping) padding for convolutions on a lat-lon grid.

A global climate field has no east or west edge: the column left of longitude
0 is the last column of the grid. Zero padding in width makes a cyclone that
crosses the dateline look like two half-cyclones at the image borders. With
periodic padding, convolutions, poolings and upsampling wrap around in width
(longitude) and keep zero padding in height (the poles), so that rolling the
input in longitude rolls the output identically.

Our own builders place `LongitudePadding2D` before `"valid"` convolutions.
Layers built by other libraries (tf-models-official) are converted in place
with `wrap_longitude`, which swaps the convolution op of every `"same"`
convolution and pooling layer inside a layer tree.
"""

import math

import numpy as np
import tensorflow as tf

_PACKAGE = "climseg"


def _wrap_width(x, left, right):
    """Extends `x` (NHWC) by `left`/`right` columns taken from the other side."""
    if left == 0 and right == 0:
        return x
    width = x.shape[2]
    if width is not None and isinstance(left, int) and isinstance(right, int):
        # Static indices: a pad wider than the map (big atrous rates on a small
        # map) wraps several times, which modular indices handle.
        index = np.arange(-left, width + right) % width
        return tf.gather(x, tf.constant(index, tf.int32), axis=2)
    width = tf.shape(x)[2]
    index = tf.math.floormod(tf.range(-left, width + right), width)
    return tf.gather(x, index, axis=2)


def longitude_pad(x, padding, constant=0):
    """Pads NHWC `x`: `constant` rows at the poles, wrapped columns in longitude.

    Args:
        x: 4D tensor (batch, lat, lon, channels).
        padding: `((top, bottom), (left, right))` in pixels.
        constant: value of the rows added at the top and bottom.

    Returns:
        The padded tensor.
    """
    (top, bottom), (left, right) = padding
    x = _wrap_width(x, left, right)
    if top or bottom:
        x = tf.pad(x, [[0, 0], [top, bottom], [0, 0], [0, 0]], constant_values=constant)
    return x


def _same_padding(size, kernel, stride, dilation):
    """(before, after) padding of TensorFlow's "SAME" for one axis."""
    effective = (kernel - 1) * dilation + 1
    if stride == 1:  # Does not depend on the input size.
        total = effective - 1
    elif isinstance(size, int):
        total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    else:
        out = -(-size // stride)
        total = tf.maximum((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _same_paddings(x, kernel, strides, dilation):
    height, width = x.shape[1], x.shape[2]
    dynamic = tf.shape(x)
    height = dynamic[1] if height is None else height
    width = dynamic[2] if width is None else width
    return (
        _same_padding(height, kernel[0], strides[0], dilation[0]),
        _same_padding(width, kernel[1], strides[1], dilation[1]),
    )


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class LongitudePadding2D(tf.keras.layers.Layer):
    """Zero padding at the poles (height), periodic padding in longitude (width).

    The drop-in replacement for `ZeroPadding2D` on global lat-lon grids
    (channels last).

    Args:
        padding: int, or `((top, bottom), (left, right))`. Defaults to `1`.
        **kwargs: passed on to `keras.layers.Layer`.

    Example:
        >>> x = tf.reshape(tf.range(6.0), (1, 2, 3, 1))
        >>> LongitudePadding2D(((0, 0), (1, 1)))(x)[0, :, :, 0].numpy()
        array([[2., 0., 1., 2., 0.],
               [5., 3., 4., 5., 3.]], dtype=float32)
    """

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        if len(padding) != 2 or any(len(pair) != 2 or min(pair) < 0 for pair in padding):
            raise ValueError(
                f"padding must be an int or ((top, bottom), (left, right)) of non-negative "
                f"ints; received {padding!r}."
            )
        self.padding = padding
        self.input_spec = tf.keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        return longitude_pad(inputs, self.padding)

    def compute_output_shape(self, input_shape):
        b, h, w, c = tf.TensorShape(input_shape).as_list()
        (top, bottom), (left, right) = self.padding
        return tf.TensorShape(
            [b, None if h is None else h + top + bottom, None if w is None else w + left + right, c]
        )

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class BilinearUpsampling2D(tf.keras.layers.Layer):
    """Bilinear upsampling by an integer factor, optionally periodic in longitude.

    With `periodic=True` the columns at the two borders interpolate with each
    other, as on the globe, instead of being clamped. The resize runs in
    float32 (the result is cast back to the input dtype), like tf-models-official.

    Args:
        factor: int upsampling factor for height and width. Defaults to `2`.
        periodic: wrap around in width. Defaults to `False`.
        **kwargs: passed on to `keras.layers.Layer`.
    """

    def __init__(self, factor=2, periodic=False, **kwargs):
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive int; received {factor!r}.")
        self.factor = int(factor)
        self.periodic = bool(periodic)

    def call(self, inputs):
        if self.factor == 1:
            return inputs
        x = tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        margin = 1 if self.periodic else 0
        x = _wrap_width(x, margin, margin)
        size = tf.stack([shape[1] * self.factor, (shape[2] + 2 * margin) * self.factor])
        x = tf.image.resize(x, size, method="bilinear")
        if margin:
            # Half-pixel centres: the output columns of the wrapped margin map
            # exactly onto the input columns they came from, so cropping
            # `factor` columns per side leaves a periodic interpolation.
            x = x[:, :, self.factor : -self.factor]
        return tf.cast(x, inputs.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = tf.TensorShape(input_shape).as_list()
        f = self.factor
        return tf.TensorShape([b, h and h * f, w and w * f, c])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "periodic": self.periodic}


def conv2d(x, filters, kernel_size, *, name, strides=1, dilation_rate=1, periodic=False, **kwargs):
    """A `Conv2D` with "same"-sized output; periodic in longitude if asked.

    Periodic: `LongitudePadding2D` (named `{name}_pad`) then a "valid"
    convolution; the padding is symmetric, `dilation * (kernel - 1) / 2`.
    """
    if kernel_size == 1 and strides != 1:
        # TF 2.18's oneDNN CPU kernels corrupt memory ("double free") in the
        # input gradient of a strided 1x1 convolution. Subsampling first, then
        # a 1x1 convolution, computes the same values with the same weights.
        x = tf.keras.layers.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)
        strides = 1
    pad = dilation_rate * (kernel_size - 1) // 2
    if periodic and pad:
        x = LongitudePadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return tf.keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate, padding=padding,
        name=name, **kwargs,
    )(x)


def conv2d_transpose(x, filters, kernel_size, *, name, strides=2, periodic=False, **kwargs):
    """A "same" `Conv2DTranspose`; periodic in longitude if asked.

    3x3 stride 2 (all the zoo uses) runs as `SubpixelConv2DTranspose`, which
    handles periodic padding itself. Other sizes, periodic: one wrapped column
    per side (`{name}_pad`), the transposed convolution, then `strides`
    columns cropped per side (`{name}_crop`). The wrapped columns add exactly
    the contributions the borders get from their neighbours across the
    dateline (valid for kernel_size <= 2 * strides + 1).
    """
    if kernel_size == 3 and strides == 2:
        from zoo.kernels.subpixel import SubpixelConv2DTranspose

        return SubpixelConv2DTranspose(filters, periodic=periodic, name=name, **kwargs)(x)
    if periodic:
        x = LongitudePadding2D(((0, 0), (1, 1)), name=f"{name}_pad")(x)
    x = tf.keras.layers.Conv2DTranspose(
        filters, kernel_size, strides=strides, padding="same", name=name, **kwargs
    )(x)
    if periodic:
        x = tf.keras.layers.Cropping2D(((0, 0), (strides, strides)), name=f"{name}_crop")(x)
    return x


def _periodic_convolution_op(layer):
    """A `convolution_op` for `layer` that pads like "SAME" but wraps in width."""

    def convolution_op(inputs, kernel):
        padding = _same_paddings(inputs, layer.kernel_size, layer.strides, layer.dilation_rate)
        # tf.nn.conv2d runs dilated convolutions natively (oneDNN);
        # tf.nn.convolution would go through SpaceToBatchND, which is several
        # times slower on CPU for large atrous rates.
        rates = set(layer.dilation_rate)
        if len(rates) == 1 and max(rates) > 1 and tuple(layer.strides) == (1, 1):
            from zoo.kernels.atrous import dilated_conv2d

            return dilated_conv2d(longitude_pad(inputs, padding), kernel, max(rates), "VALID")
        return tf.nn.conv2d(
            longitude_pad(inputs, padding),
            kernel,
            strides=list(layer.strides),
            padding="VALID",
            dilations=list(layer.dilation_rate),
        )

    return convolution_op


def _periodic_pool_function(layer, pool_function, pad_value):
    def pool(inputs, ksize, strides, padding, data_format):
        del padding  # Always "SAME" here: replaced by explicit padding.
        paddings = _same_paddings(inputs, layer.pool_size, layer.strides, (1, 1))
        return pool_function(
            longitude_pad(inputs, paddings, constant=pad_value(inputs.dtype)),
            ksize=ksize, strides=strides, padding="VALID", data_format=data_format,
        )

    return pool


def wrap_longitude(layer):
    """Makes every "same"-padded convolution and pooling inside `layer` periodic.

    For layers from other libraries (tf-models-official) that create their
    convolutions themselves. Works on built layers: sublayers created lazily
    at first call are not reached, so build first. The change is to the
    instances, not to their configs; a layer that rebuilds its sublayers from
    config (e.g. when a saved model loads) must call this again, as
    `zoo.deeplabv3plus_tfm` does.

    Only channels-last `Conv2D` and `MaxPooling2D`/`AveragePooling2D` with
    "same" padding are converted (transposed and depthwise convolutions raise).

    Args:
        layer: a `keras.layers.Layer` or `keras.Model`.

    Returns:
        The number of layers converted.
    """
    converted = 0
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        kernel = getattr(sub, "kernel_size", None) or getattr(sub, "pool_size", None)
        if getattr(sub, "padding", None) != "same" or kernel is None or max(kernel) == 1:
            continue
        if isinstance(sub, tf.keras.layers.Conv2DTranspose | tf.keras.layers.DepthwiseConv2D):
            raise ValueError(
                f"wrap_longitude cannot convert {type(sub).__name__} {sub.name!r}; "
                "expected Conv2D or 2D pooling layers."
            )
        if isinstance(sub, tf.keras.layers.Conv2D):
            sub.convolution_op = _periodic_convolution_op(sub)
        elif isinstance(sub, tf.keras.layers.MaxPooling2D):
            sub.pool_function = _periodic_pool_function(sub, tf.nn.max_pool2d, lambda d: d.min)
        elif isinstance(sub, tf.keras.layers.AveragePooling2D):
            raise ValueError(
                f"wrap_longitude cannot convert AveragePooling2D {sub.name!r} with 'same' "
                "padding (TensorFlow averages over the unpadded window)."
            )
        else:
            continue
        converted += 1
    return converted


# The CPU kernels that lived here moved to `zoo.kernels`; their old import
# paths keep working.
_MOVED = {
    "AtrousConv2D": "zoo.kernels.atrous",
    "WINDOW_BYTES": "zoo.kernels.atrous",
    "backward_scope": "zoo.kernels.atrous",
    "dilated_conv2d": "zoo.kernels.atrous",
    "SubpixelConv2DTranspose": "zoo.kernels.subpixel",
}


def __getattr__(name):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
