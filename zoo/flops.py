"""FLOP counts of zoo models, read from the TensorFlow graph.

`count_flops` traces one inference forward pass into a concrete function and
sums TensorFlow's registered per-op FLOP statistics with the TF profiler: a
multiply-add counts 2 FLOPs (convolutions, matmuls), element-wise ops and bias
additions one per element; ops without a statistic (batch norm, resize,
pooling, ReLU) count 0, as in the paper's graph counter. TensorFlow registers
no statistic for `Conv2DBackpropInput` (what a transposed convolution runs);
one is added here, so DeepLabv3+'s deconv decoder and Tiramisu's transitions
up are counted.

`training_flops_per_sample` is 3x the forward count: the backward pass
computes, for every layer, the gradient with respect to its input and with
respect to its weights, each costing about one forward pass (the usual
estimate; Kaplan et al. 2020, and the paper's own reported figures).
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import graph_util, ops
from tensorflow.python.profiler import model_analyzer, option_builder

BACKWARD_FACTOR = 3  # forward + backward ~ 3 forward passes

# Builder options for a count by name (the architecture's FLOPs, as papers
# report them). deeplabv3plus: the CPU kernels, whose atrous convolutions are
# single ops (the reference's SpaceToBatchND pads the map to a multiple of the
# rate, and the profiler would count the padding), with the decoder tail run
# layer by layer (`_layered`), not composed into fewer operations. A count of
# a built model is what its graph executes.
LAYERED = {"deeplabv3plus": {"kernels": "cpu"}}


def _layer_by_layer(model):
    """`model` with every composed decoder tail set to run its layers one by one."""
    from zoo.deeplabv3plus import DeconvDecoderTail

    for layer in model.layers:
        if isinstance(layer, DeconvDecoderTail):
            layer.kernels = "reference"  # Read at call time; its layers stay the CPU ones.
    return model


def _shape(graph, name):
    return graph_util.tensor_shape_from_node_def_name(graph, name)


def _conv2d_backprop_input_flops(graph, node):
    """2 * MACs of a transposed conv: each input element meets kh*kw*cout weights."""
    kernel = _shape(graph, node.input[1])  # (kh, kw, out_channels, in_channels)
    grads = _shape(graph, node.input[2])  # the transposed conv's input
    kernel.assert_is_fully_defined()
    grads.assert_is_fully_defined()
    kh, kw, out_channels, _ = kernel.as_list()
    return ops.OpStats("flops", 2 * grads.num_elements() * kh * kw * out_channels)


def _register_statistics():
    try:
        ops.RegisterStatistics("Conv2DBackpropInput", "flops")(_conv2d_backprop_input_flops)
    except KeyError:  # Registered already (by an earlier call).
        pass


def count_flops(model_or_name, input_shape=None, batch_size=1, **model_kwargs):
    """FLOPs of one forward pass (inference mode) per sample.

    By name, the FLOPs of the architecture: the model is built without the
    options of `LAYERED` (DeepLabv3+'s composed decoder tail), as the paper
    counted them. For a built model, the FLOPs its graph executes.

    Args:
        model_or_name: a Keras model, or a name in `zoo.MODELS` to build with
            `input_shape` and `model_kwargs`.
        input_shape: (height, width, channels) of one sample. Defaults to the
            model's input shape (required for a name).
        batch_size: batch traced; the count is divided by it. Defaults to `1`.
        **model_kwargs: passed on to the builder when a name is given.

    Returns:
        int, FLOPs per sample.

    Example:
        >>> count_flops("tiramisu", (768, 1152, 16)) / 1e12
    """
    if isinstance(model_or_name, str):
        if input_shape is None:
            raise ValueError(f"count_flops({model_or_name!r}) needs an input_shape; got None.")
        from zoo import get_model  # zoo imports this module.

        model_kwargs = {**LAYERED.get(model_or_name, {}), **model_kwargs}
        model = _layer_by_layer(get_model(model_or_name, input_shape=tuple(input_shape),
                                          **model_kwargs))
    else:
        if model_kwargs:
            raise ValueError(
                f"model_kwargs are for building by name; received a model and {model_kwargs!r}."
            )
        model = model_or_name
        if input_shape is None:
            input_shape = model.input_shape[1:]
    if any(size is None for size in input_shape):
        raise ValueError(f"input_shape must be fully defined; received {tuple(input_shape)!r}.")
    _register_statistics()
    forward = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec((batch_size, *input_shape), tf.float32)
    graph = forward.get_concrete_function(spec).graph
    options = (
        option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    profile = model_analyzer.profile(graph, options=options)
    return int(np.round(profile.total_float_ops / batch_size))


def training_flops_per_sample(model_or_name, input_shape=None, **kwargs):
    """FLOPs of one training step per sample: `BACKWARD_FACTOR` (3) x forward.

    Args:
        model_or_name, input_shape, **kwargs: as for `count_flops`.

    Returns:
        int, FLOPs per training sample (forward + backward).
    """
    return BACKWARD_FACTOR * count_flops(model_or_name, input_shape, **kwargs)
