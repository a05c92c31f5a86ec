"""Periodic padding: convolutions wrap around in longitude, zeros at the poles."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.periodic import (
    BilinearUpsampling2D,
    LongitudePadding2D,
    SubpixelConv2DTranspose,
    longitude_pad,
    wrap_longitude,
)

SHAPE = (64, 96, 16)


def _storms():
    """A smooth 'storm' in the middle of a noisy field, and the same field rolled
    in longitude so that the storm straddles the dateline (both borders)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    storm = np.exp(-((rows - 30) ** 2 + (cols - 48) ** 2) / 40.0)
    middle = 0.1 * rng.standard_normal((1, *SHAPE)) + 3.0 * storm[None, :, :, None]
    dateline = np.roll(middle, -48, axis=2)
    assert dateline[0, 30, 0, 0] > 2.5 and dateline[0, 30, -1, 0] > 2.5
    return middle.astype(np.float32), dateline.astype(np.float32)


def _numpy_periodic_conv(x, kernel, dilation=1):
    """'same' conv, wrapped in width, zero-padded in height (stride 1)."""
    kh, kw, _, cout = kernel.shape
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (0, 0), (0, 0)))
    xp = np.take(xp, np.arange(-pw, w + pw) % w, axis=2)
    out = np.zeros((x.shape[0], h, w, cout))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
            out += np.einsum("bhwc,cd->bhwd", patch, kernel[i, j])
    return out


def test_longitude_padding_wraps_columns_and_zeros_rows():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    out = LongitudePadding2D(((1, 0), (2, 1)))(x).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(
        out,
        [[0, 0, 0, 0, 0, 0, 0], [2, 3, 0, 1, 2, 3, 0], [6, 7, 4, 5, 6, 7, 4],
         [10, 11, 8, 9, 10, 11, 8]],
    )


def test_padding_wider_than_the_map_wraps_several_times():
    x = np.arange(3, dtype=np.float32).reshape(1, 1, 3, 1)
    out = longitude_pad(tf.constant(x), ((0, 0), (5, 4))).numpy().ravel()
    np.testing.assert_array_equal(out, [1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def test_longitude_padding_config_round_trip():
    layer = LongitudePadding2D(((1, 2), (3, 4)), name="pad")
    clone = LongitudePadding2D.from_config(layer.get_config())
    assert clone.padding == ((1, 2), (3, 4)) and clone.name == "pad"
    with pytest.raises(ValueError, match=r"received \(\(1, -1\), \(0, 0\)\)"):
        LongitudePadding2D(((1, -1), (0, 0)))


def test_periodic_bilinear_upsampling_interpolates_across_the_dateline():
    x = np.zeros((1, 1, 4, 1), np.float32)
    x[0, 0, 0, 0] = 1.0  # Column 0: its left neighbour is column 3.
    periodic = BilinearUpsampling2D(2, periodic=True)(x).numpy()[0, 0, :, 0]
    clamped = BilinearUpsampling2D(2, periodic=False)(x).numpy()[0, 0, :, 0]
    # Half-pixel centres: output 0 sits at input -0.25, between columns 3 and 0.
    np.testing.assert_allclose(periodic, [0.75, 0.75, 0.25, 0, 0, 0, 0, 0.25])
    np.testing.assert_allclose(clamped, [1, 0.75, 0.25, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("dilation", [1, 3])
def test_wrapped_conv2d_matches_numpy_circular_convolution(dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    conv = tf.keras.layers.Conv2D(4, 3, padding="same", dilation_rate=dilation, use_bias=False)
    conv.build(x.shape)
    assert wrap_longitude(conv) == 1
    np.testing.assert_allclose(conv(x).numpy(), _numpy_periodic_conv(x, conv.kernel.numpy(),
                                                                      dilation), atol=1e-5)


def test_wrap_longitude_rejects_layers_it_cannot_convert():
    layer = tf.keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")
    with pytest.raises(ValueError, match="cannot convert Conv2DTranspose 'up'"):
        wrap_longitude(layer)


@pytest.fixture(scope="module")
def periodic_models():
    tf.keras.utils.set_random_seed(0)
    return {name: zoo.get_model(name, input_shape=SHAPE, periodic_padding=True)
            for name in zoo.MODELS}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_storm_across_the_dateline_is_seen_like_one_in_the_middle(periodic_models, name):
    model = periodic_models[name]
    middle_field, dateline_field = _storms()
    middle = model(middle_field, training=False).numpy()
    dateline = model(dateline_field, training=False).numpy()
    np.testing.assert_allclose(np.roll(middle, -48, axis=2), dateline, atol=2e-5 * np.abs(
        middle).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_rolling_the_input_in_longitude_rolls_the_output(periodic_models, name):
    model = periodic_models[name]
    x = np.random.default_rng(1).standard_normal((1, *SHAPE)).astype(np.float32)
    out = model(x, training=False).numpy()
    rolled = model(np.roll(x, 32, axis=2), training=False).numpy()
    np.testing.assert_allclose(rolled, np.roll(out, 32, axis=2), atol=2e-5 * np.abs(out).max())


def test_zero_padded_model_sees_the_dateline_storm_differently():
    """The check above can fail: without periodic padding the borders differ."""
    model = zoo.tiramisu(input_shape=SHAPE, periodic_padding=False, blocks=(2, 2, 2),
                         growth_rate=8)
    middle_field, dateline_field = _storms()
    middle = model(middle_field, training=False).numpy()
    dateline = model(dateline_field, training=False).numpy()
    assert np.abs(np.roll(middle, -48, axis=2) - dateline).max() > 1e-2 * np.abs(middle).max()


@pytest.mark.parametrize("periodic", [False, True])
def test_subpixel_transposed_conv_equals_keras_conv2d_transpose(periodic):
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 4)).astype(np.float32)
    reference = tf.keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same",
                                                bias_initializer="random_normal")
    reference.build(x.shape)
    layer = SubpixelConv2DTranspose(6, periodic=periodic)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())  # Same variables, same shapes.
    if periodic:  # Reference: wrap one column per side, transpose, crop two per side.
        expected = reference(LongitudePadding2D(((0, 0), (1, 1)))(x))[:, :, 2:-2]
    else:
        expected = reference(x)
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), atol=1e-5)
    clone = SubpixelConv2DTranspose.from_config(layer.get_config())
    assert clone.periodic == periodic and clone.kernel_size == (3, 3)
    with pytest.raises(ValueError, match=r"strides=\(2, 2\); received 3"):
        SubpixelConv2DTranspose(6, strides=3)


@pytest.mark.parametrize("padding,rate,size,window_bytes", [
    ("SAME", 2, (9, 13), None), ("SAME", 12, (8, 12), None), ("SAME", 36, (24, 36), None),
    ("VALID", 3, (20, 24), None),
    # Windows in blocks of 3 rows (2 x 13 x 5 float32 per row), and of one row.
    ("SAME", 2, (9, 13), 3 * 2 * 13 * 5 * 4), ("SAME", 12, (20, 24), 1),
])
def test_dilated_conv2d_gives_tensorflows_values_and_gradients(padding, rate, size, window_bytes):
    from zoo.periodic import dilated_conv2d

    x = tf.random.stateless_normal((2, *size, 5), seed=(1, rate))
    kernel = tf.random.stateless_normal((3, 3, 5, 4), seed=(2, rate))

    def run(convolve):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = convolve()
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, [x, kernel])]

    ours = run(lambda: dilated_conv2d(x, kernel, rate, padding, window_bytes))
    reference = run(lambda: tf.nn.conv2d(x, kernel, 1, padding, dilations=rate))
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), ours, reference,
                          strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()),
                                   err_msg=name)


def test_dilated_conv2d_gradient_ops_are_named_like_tensorflows():
    """Under a tape, TensorFlow names gradient ops "gradient_tape/<forward scope>/...";
    the profiler (bench/profile.py) gives op time to layers by those names."""
    from zoo.periodic import dilated_conv2d

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            with tf.name_scope("model"), tf.name_scope("aspp"):
                y = dilated_conv2d(x, kernel, 2, "SAME")
        return tape.gradient(y, [x, kernel])

    graph = step.get_concrete_function(tf.TensorSpec([1, 8, 8, 2]),
                                       tf.TensorSpec([3, 3, 2, 2])).graph
    backward = [op.name for op in graph.get_operations()
                if op.type in ("Conv2DBackpropInput", "MatMul")]
    assert len(backward) == 1 + 9  # the input gradient, one matmul per tap
    assert all(name.startswith("gradient_tape/model/aspp/") for name in backward), backward


def test_dilated_conv2d_copies_one_block_of_window_rows_at_a_time():
    """With `window_bytes` of 3 rows, each tap's kernel gradient is one matmul per
    block of at most 3 window rows; no slice of x is larger than the bound."""
    from zoo.periodic import dilated_conv2d

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = dilated_conv2d(x, kernel, 2, "SAME", window_bytes=3 * 10 * 2 * 4)
        return tape.gradient(y, [x, kernel])

    graph = step.get_concrete_function(tf.TensorSpec([1, 8, 10, 2]),
                                       tf.TensorSpec([3, 3, 2, 2])).graph
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    # Rows seen per tap row: 6, 8, 6 (rate 2, 8 rows) -> blocks 2, 3, 2; 3 columns each.
    assert len(matmuls) == 3 * (2 + 3 + 2)
    windows = [op.outputs[0].shape for op in graph.get_operations()
               if op.type == "StridedSlice" and op.outputs[0].shape.rank == 4
               and op.outputs[0].shape[-1] == 2 and "gradient" in op.name]
    assert windows and max(shape[1] for shape in windows) == 3


@pytest.mark.parametrize("padding,rate,strides", [
    ("same", 2, 1), ("valid", 4, 1), ("same", 1, 1), ("valid", 1, 2),
])
def test_atrous_conv2d_is_keras_conv2d(padding, rate, strides):
    from zoo.periodic import AtrousConv2D

    x = tf.random.stateless_normal((2, 12, 17, 3), seed=(3, rate))
    reference = tf.keras.layers.Conv2D(4, 3, strides=strides, dilation_rate=rate,
                                       padding=padding)
    layer = AtrousConv2D.from_config(reference.get_config())
    reference.build(x.shape)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())

    def run(conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, [x, *conv.trainable_variables])]

    for name, a, b in zip(("output", "input gradient", "kernel gradient", "bias gradient"),
                          run(layer), run(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()),
                                   err_msg=name)


def test_deeplabv3plus_training_step_has_no_space_to_batch_or_unit_padding():
    """The ResNet's atrous units run natively, and its stride-1 units pad inside
    the convolution: neither a SpaceToBatchND copy nor a padded copy of a unit's
    input is kept for the backward pass, nor a pooled copy of a shortcut."""
    import zoo

    model = zoo.get_model("deeplabv3plus", input_shape=(64, 96, 16), kernels="cpu")

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
        return tape.gradient(y, model.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec([1, 64, 96, 16])).graph
    ops = graph.get_operations()
    assert not [op.name for op in ops if op.type in ("SpaceToBatchND", "BatchToSpaceND")]
    pads = {op.name.split("/")[1] for op in ops
            if op.type in ("Pad", "PadV2") and "_block" in op.name}
    # Only the one strided unit left at output stride 8 (stride 4 -> 8).
    assert pads == {"conv2_block3_2_pad"}, pads
    # Nor a 1x1 max pooling of stride 1 (a copy) in the later stages' shortcuts.
    pools = {op.name.split("/")[1] for op in ops if op.type == "MaxPool"}
    assert pools == {"pool1_pool", "conv2_block3_0_pool"}, pools
