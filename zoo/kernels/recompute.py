"""CPU kernel: convolutions that keep their batch norm's input for the backward pass.

In a pre-activation ResNet every convolution reads `relu(batch_norm(z))`, and
a training step keeps both tensors until the backward pass: `z` for the batch
norm's gradient, the ReLU's output for the ReLU's and the convolution's. At
768x1152 and output stride 8 the ReLU outputs are about a third of what
DeepLabv3+'s step holds at its peak. `RecomputingConv2D` keeps `z` only and
recomputes `relu(batch_norm(z))` when the backward pass reaches it: one more
batch norm (a pass over memory, no matmul) per convolution, the same values.
"""

import tensorflow as tf

from zoo.kernels.atrous import AtrousConv2D, _in_scope, backward_scope
from zoo.periodic import _PACKAGE


def batch_norm_relu_source(x):
    """The training-mode `FusedBatchNormV3` op whose ReLU is `x`, or None.

    Looks through `Identity` ops (a padding layer made an identity). Only in a
    graph (`tf.function`, as Keras trains); eager tensors have no producer.
    """
    op = getattr(x, "op", None)
    if op is None or tf.executing_eagerly():
        return None
    while op.type == "Identity":
        x = op.inputs[0]
        op = x.op
    if op.type != "Relu":
        return None
    normalized = op.inputs[0]
    norm = normalized.op
    if (norm.type != "FusedBatchNormV3" or normalized.value_index != 0
            or not norm.get_attr("is_training")):
        return None
    return norm


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class RecomputingConv2D(AtrousConv2D):
    """A `Conv2D` whose backward pass recomputes a batch-norm + ReLU input.

    The same layer, variables, values and gradients as `AtrousConv2D` (and so
    as Keras' `Conv2D`). When, in a training graph, its input is the ReLU of a
    training-mode fused batch norm of `z`, its gradient is taken with respect
    to `z` and the batch norm's scale and offset directly, from
    `relu(batch_norm(z))` recomputed in the backward pass, so that nothing
    keeps the ReLU's output (the batch norm's own gradient is not built: no
    other gradient reaches it, unless another consumer of the ReLU is an
    ordinary layer, whose gradient then adds to ours). Any other input, and
    eager calls, run as `AtrousConv2D`.
    """

    def convolution_op(self, inputs, kernel):
        norm = batch_norm_relu_source(inputs)
        convolve = super().convolution_op
        if norm is None:
            return convolve(inputs, kernel)
        z, scale, offset, mean, variance = norm.inputs
        attrs = {name: norm.get_attr(name)
                 for name in ("epsilon", "exponential_avg_factor", "data_format")}

        scope = backward_scope()  # Gradient ops named as a tape's would be.

        @tf.custom_gradient
        def convolution(z, scale, offset, kernel):
            outputs = convolve(inputs, kernel)  # The forward pass's own ReLU output.

            @_in_scope(scope)
            def gradient(d_outputs):
                # Not before the backward pass gets here: recomputed early, the
                # ReLU output would be held as long as before.
                with tf.control_dependencies([d_outputs]):
                    later = tf.identity(z)
                with tf.GradientTape() as tape:
                    tape.watch([later, scale, offset, kernel])
                    recomputed = tf.nn.relu(tf.raw_ops.FusedBatchNormV3(
                        x=later, scale=scale, offset=offset, mean=mean, variance=variance,
                        is_training=True, **attrs)[0])
                    # Only this convolution's gradient ops run; the forward op,
                    # which nothing reads, is pruned from the graph.
                    again = convolve(recomputed, kernel)
                d_z, d_scale, d_offset, d_kernel = tape.gradient(
                    again, [later, scale, offset, kernel], output_gradients=d_outputs)
                # The input gradient goes on once the kernel gradient is done.
                # Otherwise an executor with one inter-op thread leaves every
                # kernel gradient to the end of the backward pass, and each
                # recomputed input is held until then.
                with tf.control_dependencies([d_kernel]):
                    return tf.identity(d_z), d_scale, d_offset, d_kernel

            return outputs, gradient

        return convolution(z, scale, offset, tf.convert_to_tensor(kernel))
