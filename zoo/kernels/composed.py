"""Chains of linear convolutions run as one convolution.

Convolutions with no activation between them compose into one convolution:
in the interior of the map, conv(conv(x, A) + a, B) + b is conv(x, A * B) +
(B applied to a) + b, whatever A and B are. The composed kernel is computed
from the layers' own variables at every step (on kernel-sized arrays, so it
costs next to nothing), and automatic differentiation through the
composition gives every layer's variables exactly the gradients the layered
chain would give them. When the last layer has few output channels (a
segmentation head: 3 classes) the composed convolution is far cheaper than
the chain.

Only the interior is exact: at the edges, the chain pads every intermediate
map with zeros, which a single convolution cannot do. Callers compute the
border rows (and, without periodic padding, columns) from the layers on thin
strips (`zoo.kernels.decoder_tail`).

A `LinearOp` is a composed map from a grid to a grid `factor` times finer:

    out[f * i + r, o] = sum_u x[i + u - p, c] kernel[u, c, r, o] + bias[r, o]

in each of the two spatial axes, with a centred kernel of odd size
k = 2 p + 1 (zero taps allowed): kernel (k, k, C, f, f, C_out), bias
(f, f, C_out). A 1x1 convolution is a `LinearOp` with factor 1. Pulling it
back through a layer in front of it (`through_conv`, `through_transposed`)
gives the `LinearOp` of the longer chain.
"""

import collections

import numpy as np
import tensorflow as tf

from zoo.periodic import longitude_pad

LinearOp = collections.namedtuple("LinearOp", ["kernel", "bias", "factor"])


def from_conv1x1(kernel, bias):
    """The `LinearOp` of a 1x1 convolution (kernel (1, 1, C, C_out))."""
    kernel = tf.convert_to_tensor(kernel)
    channels, out = kernel.shape[2], kernel.shape[3]
    bias = tf.zeros([out], kernel.dtype) if bias is None else bias
    return LinearOp(tf.reshape(kernel, [1, 1, channels, 1, 1, out]),
                    tf.reshape(bias, [1, 1, out]), 1)


def _place(products, shifts, size):
    """Sums `products[a, b]` (each (k, k, ...)) shifted by `shifts[a]`, `shifts[b]`
    into a (size, size, ...) canvas."""
    total = None
    k = products.shape[2]
    rest = [[0, 0]] * (len(products.shape) - 4)
    # Unstacked, not indexed: the gradient of an index is a zero-filled tensor of
    # all the products per index; unstack's is one stack.
    for row, dy in zip(tf.unstack(products), shifts, strict=True):
        for product, dx in zip(tf.unstack(row), shifts, strict=True):
            placed = tf.pad(product, [[dy, size - k - dy], [dx, size - k - dx], *rest])
            total = placed if total is None else total + placed
    return total


def _bias_through(op, bias):
    """`op`'s bias plus the response of `op` to a constant input `bias`."""
    if bias is None:
        return op.bias
    return op.bias + tf.einsum("c,uvcrso->rso", bias, op.kernel)


def through_conv(op, kernel, bias=None):
    """`op` after a stride-1, "same", odd-sized convolution (kernel (ka, ka, C_in, C)).

    x[i] = sum_a x_in[i + a - pa] A[a] + bias: the composed kernel at offset
    w is sum over u + a = w of A[a] K[u] (contracted over C).
    """
    ka = kernel.shape[0]
    if ka % 2 == 0 or kernel.shape[1] != ka:
        raise ValueError(f"through_conv needs a square odd-sized kernel; got {kernel.shape}")
    k = op.kernel.shape[0]
    products = tf.einsum("abic,uvcrso->abuvirso", kernel, op.kernel)
    composed = _place(products, range(ka), k + ka - 1)
    return LinearOp(composed, _bias_through(op, bias), op.factor)


def _transposed_taps(k, p):
    """Gather indices for `through_transposed`: for each phase r2 (0, 1), the
    index into E (offset d = u - a, stored at d + 2) of each new tap v, or
    the index of an appended zero; and the new half-size p'."""
    bounds = [((r2 - 2 - p + 1) // 2, (p + r2) // 2) for r2 in (0, 1)]  # ceil, floor
    new_p = max(max(-low, high) for low, high in bounds)
    index = np.full((2, 2 * new_p + 1), k + 2, np.int32)  # k + 2: the zero entry
    for r2 in (0, 1):
        for v in range(2 * new_p + 1):
            e = 2 * (v - new_p) + p - r2 + 2
            if 0 <= e < k + 2:
                index[r2, v] = e
    return index, new_p


def through_transposed(op, kernel, bias=None):
    """`op` after a 3x3, stride-2, "same" transposed convolution.

    The transposed convolution (kernel (3, 3, C_in, C), in-to-out order) puts
    x[m] W[a] into out[2 m + a] for a = 0, 1, 2 and keeps out[0 : 2 M], as
    `zoo.kernels.subpixel.SubpixelConv2DTranspose` does. The result maps the coarser
    grid to an output `2 * op.factor` times finer.
    """
    if tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"through_transposed needs a 3x3 kernel; got {kernel.shape}")
    k, f = op.kernel.shape[0], op.factor
    p = (k - 1) // 2
    products = tf.einsum("abic,uvcrso->abuvirso", kernel, op.kernel)
    # E[d] = sum over u - a = d of W[a] K[u], d = -2 .. k - 1, stored at d + 2.
    energy = _place(products, [2, 1, 0], k + 2)
    energy = tf.pad(energy, [[0, 1], [0, 1]] + [[0, 0]] * 4)  # the zero entry
    index, new_p = _transposed_taps(k, p)
    # new[v, r2, ...] = E[index[r2, v]], in rows then columns.
    rows = tf.gather(energy, index.T, axis=0)  # (v, r2y, e_x, C_in, fy, fx, C_out)
    both = tf.gather(rows, index.T, axis=2)  # (v, r2y, w, r2x, C_in, fy, fx, C_out)
    size = 2 * new_p + 1
    c_in, c_out = kernel.shape[2], op.kernel.shape[5]
    # Output phase R' = f r2 + R, per axis.
    composed = tf.transpose(both, [0, 2, 4, 1, 5, 3, 6, 7])
    composed = tf.reshape(composed, [size, size, c_in, 2 * f, 2 * f, c_out])
    new_bias = _bias_through(op, bias)
    new_bias = tf.tile(new_bias, [2, 2, 1])  # R' = f r2 + R: the same for both r2
    return LinearOp(composed, new_bias, 2 * f)


def split_input_channels(op, sizes):
    """Splits `op` on a concatenation of inputs of `sizes` channels.

    op(concat(x_1, ..., x_n)) = sum_i op_i(x_i); the bias goes to the first.
    """
    kernels = tf.split(op.kernel, sizes, axis=2)
    zero = tf.zeros_like(op.bias)
    return [LinearOp(kernel, op.bias if i == 0 else zero, op.factor)
            for i, kernel in enumerate(kernels)]


def fold_input(op, block):
    """`op` (factor 1) as an op on `tf.nn.space_to_depth(x, block)`, factor `block`.

    A convolution with few input and output channels (16 -> 3) runs far below
    the machine's peak; on the space-to-depth grid it is a small convolution
    with `block`**2 times the channels on both sides, which runs near it.
    Output phase r and input phase q of a block are at offset u = block d +
    q - r of the original kernel, for block offsets d = -p' .. p', p' =
    ceil(p / block); taps outside the original kernel are zero.
    """
    if op.factor != 1:
        raise ValueError(f"fold_input needs an op of factor 1; got factor {op.factor}")
    k, c_in, c_out = op.kernel.shape[0], op.kernel.shape[2], op.kernel.shape[5]
    p = (k - 1) // 2
    new_p = -(-p // block)
    size = 2 * new_p + 1
    offsets = (block * (np.arange(size)[:, None, None] - new_p)
               + np.arange(block)[None, :, None] - np.arange(block)[None, None, :] + p)
    index = np.where((offsets >= 0) & (offsets < k), offsets, k)  # k: the zero entry
    kernel = tf.pad(op.kernel[:, :, :, 0, 0, :], [[0, 1], [0, 1], [0, 0], [0, 0]])
    rows = tf.gather(kernel, index, axis=0)  # (d_y, q_y, r_y, u_x, C, C_out)
    both = tf.gather(rows, index, axis=3)  # (d_y, q_y, r_y, d_x, q_x, r_x, C, C_out)
    # Input channel (q_y, q_x, C) as space_to_depth orders it; output phase (r_y, r_x).
    kernel = tf.transpose(both, [0, 3, 1, 4, 6, 2, 5, 7])
    kernel = tf.reshape(kernel, [size, size, block * block * c_in, block, block, c_out])
    return LinearOp(kernel, tf.tile(op.bias, [block, block, 1]), block)


def convolve(op, x, periodic=False):
    """`op` on NHWC `x` before the sub-pixel shuffle: (N, H, W, factor**2 * C_out),
    bias included. Sum ops of the same factor on different inputs this way and
    shuffle once (`tf.nn.depth_to_space`)."""
    k, f = op.kernel.shape[0], op.factor
    p = (k - 1) // 2
    c_in, c_out = op.kernel.shape[2], op.kernel.shape[5]
    kernel = tf.cast(tf.reshape(op.kernel, [k, k, c_in, f * f * c_out]), x.dtype)
    if periodic:
        out = tf.nn.conv2d(longitude_pad(x, ((p, p), (p, p))), kernel, 1, "VALID")
    else:  # Zeros on all sides: "SAME" (k is odd), without a padded copy of x.
        out = tf.nn.conv2d(x, kernel, 1, "SAME")
    return tf.nn.bias_add(out, tf.cast(tf.reshape(op.bias, [-1]), x.dtype))


def apply(op, x, periodic=False):
    """Runs `op` on NHWC `x`: an output `op.factor` times larger in H and W.

    Exact away from the borders; the pad is zeros at the top and bottom, and
    wrapped columns (`periodic`) or zeros at the sides.
    """
    out = convolve(op, x, periodic)
    return tf.nn.depth_to_space(out, op.factor) if op.factor > 1 else out
