"""RecomputingConv2D: the same values and gradients as Conv2D, without keeping ReLU outputs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zoo.recompute import RecomputingConv2D, batch_norm_relu_source

ROOT = Path(__file__).resolve().parents[1]


def _net(conv, depth=2, size=(8, 10), channels=4, ordinary=True):
    """x -> conv -> [BN -> ReLU -> `conv`] * depth; the last ReLU read by two `conv`s
    and, if `ordinary`, by a Keras Conv2D too."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((*size, 3))
    x = tf.keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(inputs)
    for i in range(depth):
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.Activation("relu")(x)
        if i < depth - 1:
            x = conv(channels, 3, padding="same", use_bias=False)(x)
            continue
        readers = [conv(5, 3, padding="same", dilation_rate=2, use_bias=False)(x),
                   conv(5, 1)(x)]
        if ordinary:
            readers.append(tf.keras.layers.Conv2D(5, 1)(x))
        x = tf.keras.layers.Add()(readers)
    return tf.keras.Model(inputs, x)


def _train_step(model):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, model.trainable_variables)]
    return step


def test_values_and_gradients_are_conv2ds():
    x = tf.random.stateless_normal((2, 8, 10, 3), seed=(1, 2))
    ours = [t.numpy() for t in _train_step(_net(RecomputingConv2D))(x)]
    model = _net(tf.keras.layers.Conv2D)
    reference = [t.numpy() for t in _train_step(model)(x)]
    names = ["output", *(v.name for v in model.trainable_variables)]
    # Output, first conv; (gamma, beta, conv) twice but the last conv is three.
    assert len(ours) == len(reference) == 2 + 2 + 1 + 2 + 1 + 2 + 2
    for name, a, b in zip(names, ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()),
                                   err_msg=name)


def test_training_graph_keeps_no_relu_output_and_recomputes_after_the_gradient():
    model = _net(RecomputingConv2D, depth=1, ordinary=False)
    graph = _train_step(model).get_concrete_function(tf.TensorSpec([2, 8, 10, 3])).graph
    relus = [op for op in graph.get_operations()
             if op.type == "Relu" and not op.name.startswith("gradient_tape")]
    assert len(relus) == 1
    # Read by the two forward convolutions only (and by the pass-through of the
    # dilated one's custom gradient, whose copy nothing reads): no ReluGrad, no
    # kernel gradient reads it, so it is freed in the forward pass.
    relu = relus[0].outputs[0]
    readers = sorted(c.type for c in relu.consumers())
    assert readers == ["Conv2D", "Conv2D", "IdentityN"], readers
    for op in relu.consumers():
        if op.type == "IdentityN":
            passed = [out for out, inp in zip(op.outputs, op.inputs, strict=True) if inp is relu]
            assert passed and not any(out.consumers() for out in passed)
    recomputed = [op for op in graph.get_operations()
                  if op.type == "FusedBatchNormV3" and op.name.startswith("gradient_tape/")]
    assert len(recomputed) == 2  # one per RecomputingConv2D
    for op in recomputed:  # Its input waits for the output gradient.
        assert op.inputs[0].op.type == "Identity" and op.inputs[0].op.control_inputs


def test_batch_norm_relu_source_finds_a_training_mode_batch_norm_only():
    x = tf.random.stateless_normal((1, 4, 4, 3), seed=(3, 4))
    found = {}

    @tf.function
    def trace(x):
        scale, offset, mean, variance = tf.ones([3]), tf.zeros([3]), tf.zeros([3]), tf.ones([3])
        train = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, is_training=True)[0]
        infer = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, variance,
                                                 is_training=False)[0]
        found["training, through an identity"] = batch_norm_relu_source(
            tf.identity(tf.nn.relu(train)))
        found["inference"] = batch_norm_relu_source(tf.nn.relu(infer))
        found["no batch norm"] = batch_norm_relu_source(tf.nn.relu(x))
        found["no ReLU"] = batch_norm_relu_source(train)
        return x

    trace(x)
    assert found.pop("training, through an identity").type == "FusedBatchNormV3"
    assert found == {"inference": None, "no batch norm": None, "no ReLU": None}
    assert batch_norm_relu_source(tf.nn.relu(x)) is None  # eager


_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import climseg_tf
    import tensorflow as tf
    from tests.test_zoo_recompute import _net, _train_step
    from zoo.recompute import RecomputingConv2D
    conv = RecomputingConv2D if sys.argv[1] == "recompute" else tf.keras.layers.Conv2D
    model = _net(conv, depth=10, size=(64, 64), channels=32, ordinary=False)
    step = _train_step(model)
    x = tf.random.stateless_normal((4, 64, 64, 3), seed=(1, 2))
    step(x)
    tf.config.experimental.reset_memory_stats("CPU:0")
    step(x)
    print(json.dumps(tf.config.experimental.get_memory_info("CPU:0")["peak"]))
""")


@pytest.mark.slow
def test_training_step_peak_memory_drops_by_the_relu_outputs():
    """Ten BN-ReLU-conv layers on 4 x 64 x 64 x 32 maps (2 MiB each), measured by
    TensorFlow's BFC allocator in a fresh process: one map less per layer, less a
    map or two (measured: 9.8 with one inter-op thread, 11.1 with two)."""
    script = _PEAK_SCRIPT.format(root=str(ROOT))
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true", TF_CPP_MIN_LOG_LEVEL="2")
    peaks = {}
    for mode in ("recompute", "plain"):
        out = subprocess.run([sys.executable, "-c", script, mode], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    tensor = 4 * 64 * 64 * 32 * 4
    assert peaks["plain"] - peaks["recompute"] >= 8 * tensor, peaks
