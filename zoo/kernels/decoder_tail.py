"""CPU kernel: the linear end of DeepLabv3+'s "deconv1x" decoder as two convolutions.

`zoo.deeplabv3plus.DeconvDecoderTail` (two 3x3 stride-2 transposed
convolutions to full resolution, a two-conv skip from the input,
concatenation, two 3x3 convolutions and the 1x1 logits) has no activation
inside: it is one affine map of (stride-4 features, input). Layered, it is
~80% of the network's FLOPs and most of its activation memory (256- and
384-channel maps at full resolution). `run` computes it with the layers'
kernels composed (`zoo.kernels.composed`) into two convolutions straight to
the logit channels, both on the stride-4 grid: 256 channels to 16 x classes
sub-pixel outputs, and the input in 4x4 blocks to the same outputs. The
border rows and columns, where the chain's zero padding of intermediate maps
matters, come from the layers on thin strips (`_edges`). Same variables,
same outputs and gradients up to float rounding.
"""

import numpy as np
import tensorflow as tf

from zoo.kernels import composed
from zoo.periodic import longitude_pad


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


def _edge_convs(tail, head):
    """The two convs that end `_edges`: (kernel, bias) of fuse_conv1 with the
    head's 3x3 taps composed into it, 384 -> 27 (tap, class) channels, and of
    the sum of each pixel's 9 neighbours' own tap plus the head's bias."""
    fuse = tail.convs["fuse_conv1"]
    taps = tf.reshape(head.kernel, [3, 3, -1, tail.num_classes])  # (a, b, 256, classes)
    kernel = tf.einsum("xyim,abmo->xyiabo", tf.convert_to_tensor(fuse.kernel), taps)
    per_tap = 9 * tail.num_classes
    return ((tf.reshape(kernel, [3, 3, -1, per_tap]),
             tf.reshape(tf.einsum("m,abmo->abo", fuse.bias, taps), [per_tap])),
            (_tap_sum_kernel(tail.num_classes), tf.reshape(head.bias, [-1])))


def _edges(tail, feature_ends, image, convs, axis):
    """The TAIL_BORDER output pixels at both ends of `axis` (1: rows, 2: columns),
    from the features' TAIL_STRIP // 4 pixels at each end (`_ends`); `convs`:
    `_edge_convs(tail, head)`.

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
    x = tail.deconv_x2(feature_ends)
    x = tail.deconv_x1(_nearest_edge(x, axis, (border + 4) // 2))
    skip = tail._conv("skip_conv2", tail._conv("skip_conv1", _ends(image, axis, border + 4)))
    x = tf.concat([_nearest_edge(x, axis, border + 2),
                   tf.cast(_nearest_edge(skip, axis, border + 2), x.dtype)], axis=-1)
    (fuse_kernel, fuse_bias), (sum_kernel, sum_bias) = convs
    x = _edge_conv(tail, x, axis, border + 2, fuse_kernel, fuse_bias)
    x = _edge_conv(tail, x, axis, border + 1, sum_kernel, sum_bias)
    return tf.split(x, 2, axis=0)


def _edge_conv(tail, x, axis, keep, kernel, bias):
    """A 3x3 conv of the `keep` pixels nearest the edge of the start (first
    half of the batch) and end strips: `keep - 1` pixels out along `axis`;
    across it, padded as the layers pad."""
    start, end = _nearest_edges(x, axis, keep)
    before, after = [[0, 0]] * 4, [[0, 0]] * 4
    before[axis], after[axis] = [1, 0], [0, 1]
    x = tf.concat([tf.pad(start, before), tf.pad(end, after)], 0)
    if axis == 1 and tail.periodic:
        x = longitude_pad(x, ((0, 0), (1, 1)))
    else:
        across = [[0, 0]] * 4
        across[3 - axis] = [1, 1]
        x = tf.pad(x, across)
    out = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 1, "VALID")
    return tf.nn.bias_add(out, tf.cast(bias, x.dtype))


def _through(op, layer):
    """`op` pulled back through the conv or transposed conv `layer`."""
    kernel = tf.convert_to_tensor(layer.kernel)
    if isinstance(layer, tf.keras.layers.Conv2DTranspose):  # (3, 3, out, in) order.
        return composed.through_transposed(op, tf.transpose(kernel, [0, 1, 3, 2]),
                                           layer.bias)
    return composed.through_conv(op, kernel, layer.bias)


def _head_op(tail):
    """The `zoo.kernels.composed.LinearOp` of the last 3x3 conv and the 1x1 logits."""
    logits = composed.from_conv1x1(tf.convert_to_tensor(tail.logits.kernel),
                                   tail.logits.bias)
    return _through(logits, tail.convs["fuse_conv2"])


def composed_ops(tail, head=None):
    """The `zoo.kernels.composed.LinearOp`s from the features and from the input.

    Args:
        tail: a built `DeconvDecoderTail`.
        head: `_head_op(tail)`, if already computed.
    """
    op = _through(_head_op(tail) if head is None else head,
                       tail.convs["fuse_conv1"])
    from_features, from_skip = composed.split_input_channels(
        op, [tail.deconv_x1.filters, tail.convs["skip_conv2"].filters])
    from_features = _through(_through(from_features, tail.deconv_x1),
                                  tail.deconv_x2)
    from_image = _through(_through(from_skip, tail.convs["skip_conv2"]),
                               tail.convs["skip_conv1"])
    return from_features, from_image


def fits(tail, features, image):
    height, width = image.shape[1], image.shape[2]
    if height is None or width is None:
        return False
    if height % 4 or width % 4:  # The features' grid is the input's in 4x4 blocks.
        return False
    return height >= 2 * TAIL_STRIP and (tail.periodic or width >= 2 * TAIL_STRIP)


def _composed(tail, features, image):
    dtype = tail.logits.compute_dtype
    head = _head_op(tail)  # Shared by the composed map and the border strips.
    from_features, from_image = composed_ops(tail, head)
    height, width = image.shape[1], image.shape[2]
    axes = (1,) if tail.periodic else (1, 2)
    features, *feature_ends = _with_ends(features, TAIL_STRIP // 4, axes)
    convs = _edge_convs(tail, head)  # Shared by the rows' and the columns' edges.
    edges = {axis: [tf.cast(edge, dtype) for edge in _edges(tail, ends, image, convs, axis)]
             for axis, ends in zip(axes, feature_ends, strict=True)}
    # The input's 9x9 conv to the classes runs on 4x4 blocks of the input, as a
    # 3x3 conv 256 -> 48 on the features' grid (3x faster than 16 -> 3 at full
    # size), summed with the features' conv before the one sub-pixel shuffle.
    from_image = composed.fold_input(from_image, from_features.factor)
    image_blocks = tf.nn.space_to_depth(image, from_features.factor)
    out = (composed.convolve(from_features, features, tail.periodic)
           + tf.cast(composed.convolve(from_image, image_blocks, tail.periodic),
                     features.dtype))
    out = tf.cast(tf.nn.depth_to_space(out, from_features.factor), dtype)
    b = TAIL_BORDER
    if not tail.periodic:
        left, right = edges[2]
        out = tf.concat([left[:, b:height - b], out[:, b:height - b, b:width - b],
                         right[:, b:height - b]], axis=2)
    else:
        out = out[:, b:height - b]
    top, bottom = edges[1]
    return tf.concat([top, out, bottom], axis=1)


def run(tail, features, image):
    """The tail's logits: composed where the sizes allow, else its layers."""
    if fits(tail, features, image):
        return _composed(tail, features, image)
    return tail._layered(features, image)
