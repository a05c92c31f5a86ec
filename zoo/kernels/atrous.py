"""Atrous (dilated) convolutions run natively, with a kernel gradient of matmuls.

CPU kernels (`zoo.kernels`): TensorFlow's CPU path for a dilated convolution
(SpaceToBatchND, a convolution, BatchToSpaceND) keeps a rearranged copy of
the input for the backward pass, and oneDNN's kernel gradient for large
rates is pathologically slow. Same variables, values and gradients as Keras'
`Conv2D`.
"""

import tensorflow as tf

from zoo.periodic import _PACKAGE, _same_padding


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
        return super().convolution_op(inputs, kernel)


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

