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


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class SubpixelConv2DTranspose(tf.keras.layers.Conv2DTranspose):
    """A 3x3, stride-2, "same" `Conv2DTranspose` computed as four small convolutions.

    The same layer, variables and result as Keras' `Conv2DTranspose(filters,
    3, strides=2, padding="same")`, computed differently: each of the four
    output phases (even/odd row, even/odd column) is an ordinary convolution
    of the input with 1, 2, 2 or 4 taps of the kernel, and `depth_to_space`
    interleaves them. Training on CPU is several times faster than
    TensorFlow's `Conv2DBackpropInput`, whose filter gradient is slow
    (measured 38 vs 168 GFLOP/s for a 3x3 conv). Optionally periodic in
    longitude.

    Args:
        filters: output channels.
        periodic: wrap around in width. Defaults to `False`.
        **kwargs: passed on to `Conv2DTranspose` (kernel_size 3, strides 2
            and padding "same" are fixed).
    """

    def __init__(self, filters, periodic=False, **kwargs):
        for key, fixed in (("kernel_size", (3, 3)), ("strides", (2, 2)), ("padding", "same")):
            value = kwargs.pop(key, fixed)
            value = tuple(value) if isinstance(value, list | tuple) else value
            if value not in (fixed, fixed[0] if isinstance(fixed, tuple) else fixed):
                raise ValueError(
                    f"SubpixelConv2DTranspose has {key}={fixed!r}; received {value!r}."
                )
        super().__init__(filters, (3, 3), strides=(2, 2), padding="same", **kwargs)
        if self.data_format != "channels_last" or self.output_padding is not None:
            raise ValueError("SubpixelConv2DTranspose supports channels_last and no "
                             "output_padding only.")
        self.periodic = bool(periodic)

    def call(self, inputs):
        # out[2i + a] gets x[i] * K[a] (a = 0, 1, 2): even outputs K[0] from
        # x[m] and K[2] from x[m - 1]; odd outputs K[1] from x[m].
        # The (3, 3) taps of the (in, out) kernel, unstacked: the gradient of
        # indexing would be a zero-filled kernel-sized tensor per tap.
        k = [tf.unstack(row) for row in tf.unstack(tf.transpose(self.kernel, [0, 1, 3, 2]))]
        taps = {0: [2, 0], 1: [1]}  # Kernel rows for (x[m - 1], x[m]), per phase.
        # x[m - 1] is a zero row or column (wrapped columns if periodic): each phase
        # pads the input as far as it reads it. Not slices of one padded copy,
        # whose gradients are zero-filled copies; not the convolution's explicit
        # padding, which oneDNN runs several times slower in bfloat16.
        columns = {0: _wrap_width(inputs, 1, 0) if self.periodic else inputs, 1: inputs}
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                kernel = tf.stack([tf.stack([k[i][j] for j in taps[b]]) for i in taps[a]])
                left = 0 if self.periodic else len(taps[b]) - 1
                top = len(taps[a]) - 1
                source = columns[b]
                if top or left:
                    source = tf.pad(source, [[0, 0], [top, 0], [left, 0], [0, 0]])
                phases.append(tf.nn.conv2d(source, kernel, 1, "VALID"))
        outputs = tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key)
        return {**config, "periodic": self.periodic}


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
        return SubpixelConv2DTranspose(filters, periodic=periodic, name=name, **kwargs)(x)
    if periodic:
        x = LongitudePadding2D(((0, 0), (1, 1)), name=f"{name}_pad")(x)
    x = tf.keras.layers.Conv2DTranspose(
        filters, kernel_size, strides=strides, padding="same", name=name, **kwargs
    )(x)
    if periodic:
        x = tf.keras.layers.Cropping2D(((0, 0), (strides, strides)), name=f"{name}_crop")(x)
    return x


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class AtrousConv2D(tf.keras.layers.Conv2D):
    """A `Conv2D` whose stride-1 atrous convolution runs by `dilated_conv2d`.

    The same layer, variables and values as Keras' `Conv2D`. Keras goes
    through `tf.nn.convolution`, which on CPU runs a dilated convolution as
    SpaceToBatchND, a convolution and BatchToSpaceND: the rearranged input is
    a copy that the training step keeps for the kernel gradient, and for large
    rates on small maps it runs many tiny convolutions (about 10x slower,
    measured: rate 36, 24x36x512 map). Here oneDNN's native dilation runs the
    convolution and `dilated_conv2d` its kernel gradient. Other strides,
    rates and paddings run as in `Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        rates = set(self.dilation_rate)
        if (len(rates) == 1 and max(rates) > 1 and tuple(self.strides) == (1, 1)
                and self.data_format == "channels_last" and self.padding in ("same", "valid")):
            return dilated_conv2d(inputs, kernel, max(rates), self.padding.upper())
        # Not super(): the ASPP binds this method to tf-models-official's Conv2Ds.
        return tf.keras.layers.Conv2D.convolution_op(self, inputs, kernel)


# Largest input window the kernel gradient of `dilated_conv2d` copies at once.
WINDOW_BYTES = 16 << 20


def dilated_conv2d(x, kernel, dilation, padding="SAME", window_bytes=None):
    """A stride-1 atrous convolution whose kernel gradient is a few matmuls per tap.

    The same values as `tf.nn.conv2d(x, kernel, 1, padding, dilations=dilation)`
    and the same gradients. TensorFlow's CPU kernel gradient for large rates
    (oneDNN's Conv2DBackpropFilter) is pathologically slow: for DeepLabv3+'s
    ASPP at 768x1152 (a 96x144x2048 map, rate 36) it took 288 s of a 298 s
    training step (bench/results/profile_full_before_fix.txt). Here the kernel
    gradient of tap (a, b) is the input's window at offset (a r, b r) (minus
    the padding) contracted with the output gradient, one matmul per block of
    window rows, one block in memory at a time: a window is a copy, and at
    full size the ASPP's would be about 100 MB each. Taps whose window lies
    wholly in the padding get zeros. Inputs of unknown height or width run
    `tf.nn.conv2d` as it is.

    Args:
        x: NHWC input.
        kernel: (kh, kw, in, out).
        dilation: int rate, the same in both axes.
        padding: "SAME" or "VALID".
        window_bytes: largest block of an input window copied at once (at
            least one row). Defaults to `WINDOW_BYTES` (16 MiB).

    Returns:
        The convolution's output.
    """
    dilation = int(dilation)
    kernel = tf.convert_to_tensor(kernel)  # A read: the gradient reaches the variable.
    kh, kw = kernel.shape[0], kernel.shape[1]
    if None in x.shape[1:3]:
        return tf.nn.conv2d(x, kernel, 1, padding, dilations=dilation)
    window_bytes = WINDOW_BYTES if window_bytes is None else int(window_bytes)

    # TensorFlow names a tape's gradient ops "gradient_tape/<forward scope>/...";
    # ours would be unscoped (profiles could not tell whose they are).
    scope = backward_scope()

    @tf.custom_gradient
    def convolve(x, kernel):
        y = tf.nn.conv2d(x, kernel, 1, padding, dilations=dilation)

        @_in_scope(scope)
        def gradient(dy):
            dx = tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), 1, padding,
                                        dilations=dilation)
            (top, _), (left, _) = (
                _same_padding(0, k, 1, dilation) if padding == "SAME" else (0, 0)
                for k in (kh, kw))
            height, width = x.shape[1], x.shape[2]
            out_height, out_width = dy.shape[1], dy.shape[2]
            channels, filters = kernel.shape[2], kernel.shape[3]
            taps, previous = [], []
            for a in range(kh):
                for b in range(kw):
                    # Tap (a, b) sees x[i + a r - top, j + b r - left] at output
                    # (i, j); rows and columns in the padding add nothing.
                    rows = _overlap(a * dilation - top, height, out_height)
                    cols = _overlap(b * dilation - left, width, out_width)
                    if rows is None or cols is None:
                        taps.append(tf.zeros((channels, filters), dy.dtype))
                        continue
                    row_bytes = ((x.shape[0] or 1) * (cols[0].stop - cols[0].start)
                                 * channels * x.dtype.size)
                    block = max(1, window_bytes // row_bytes)
                    tap = None
                    for start in range(0, rows[0].stop - rows[0].start, block):
                        stop = min(start + block, rows[0].stop - rows[0].start)
                        # One block at a time: each is a copy of part of the input.
                        with tf.control_dependencies(previous):
                            window = x[:, rows[0].start + start:rows[0].start + stop, cols[0]]
                        part = tf.matmul(
                            tf.reshape(window, (-1, channels)),
                            tf.reshape(dy[:, rows[1].start + start:rows[1].start + stop,
                                          cols[1]], (-1, filters)),
                            transpose_a=True)
                        tap = part if tap is None else tap + part
                        previous = [tap]
                    taps.append(tap)
            return dx, tf.reshape(tf.stack(taps), kernel.shape)

        return y, gradient

    return convolve(x, kernel)


def backward_scope():
    """The name scope TensorFlow gives a tape's gradient ops of ops made here:
    "gradient_tape/<current scope>/", for custom gradients to name theirs alike."""
    return "/".join(filter(None, ("gradient_tape", tf.get_current_name_scope()))) + "/"


def _in_scope(name):
    """Decorator: run the function under the absolute name scope `name` ("a/b/")."""
    def decorate(fn):
        def scoped(*args):
            with tf.name_scope(name):
                return fn(*args)
        return scoped
    return decorate


def _overlap(offset, size, out_size):
    """(input slice, output slice) where x[o + offset] exists for o in [0, out_size)."""
    start, stop = max(0, offset), min(size, offset + out_size)
    if start >= stop:
        return None
    return slice(start, stop), slice(start - offset, stop - offset)


def _periodic_convolution_op(layer):
    """A `convolution_op` for `layer` that pads like "SAME" but wraps in width."""

    def convolution_op(inputs, kernel):
        padding = _same_paddings(inputs, layer.kernel_size, layer.strides, layer.dilation_rate)
        # tf.nn.conv2d runs dilated convolutions natively (oneDNN);
        # tf.nn.convolution would go through SpaceToBatchND, which is several
        # times slower on CPU for large atrous rates.
        rates = set(layer.dilation_rate)
        if len(rates) == 1 and max(rates) > 1 and tuple(layer.strides) == (1, 1):
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
