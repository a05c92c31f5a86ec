"""DeepLabv3+'s composed decoder tail (CPU kernels) computes what the layered chain computes."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.deeplabv3plus import DeconvDecoderTail
from zoo.flops import _layer_by_layer
from zoo.kernels import composed, decoder_tail
from zoo.kernels.decoder_tail import TAIL_BORDER, TAIL_STRIP


def _tail(periodic, height, width, seed=0, batch=1):
    """A built tail with random non-zero biases, and random inputs for it."""
    tf.keras.utils.set_random_seed(seed)
    tail = DeconvDecoderTail(3, periodic=periodic, kernels="cpu")
    features = tf.random.normal((batch, height // 4, width // 4, 256))
    image = tf.random.normal((batch, height, width, 16))
    tail([features, image])
    for variable in tail.weights:
        if "bias" in variable.name:
            variable.assign(tf.random.normal(variable.shape, stddev=0.1))
    return tail, features, image


def _relative(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("height,width", [(16, 16), (24, 40), (64, 96)])
def test_composed_tail_gives_the_layered_outputs_and_gradients(periodic, height, width):
    tail, features, image = _tail(periodic, height, width, batch=2)
    assert decoder_tail.fits(tail, features, image)
    target = tf.random.normal((2, height, width, 3))

    def gradients(run):
        with tf.GradientTape() as tape:
            tape.watch([features, image])
            logits = run()
            loss = tf.reduce_sum(logits * target)
        return logits, tape.gradient(loss, [features, image, *tail.trainable_weights])

    fast, fast_grads = gradients(lambda: tail([features, image]))
    slow, slow_grads = gradients(lambda: tail._layered(features, image))
    assert _relative(fast, slow) < 1e-5
    names = ["features", "image"] + [v.name for v in tail.trainable_weights]
    assert len(names) == 2 + 14
    for name, a, b in zip(names, fast_grads, slow_grads, strict=True):
        assert _relative(a, b) < 1e-4, name


@pytest.mark.parametrize("periodic", [True, False])
def test_border_and_strip_sizes_cover_where_the_chain_pads(periodic):
    """The single composed convolution is wrong exactly in TAIL_BORDER rows (and,
    without periodic padding, columns) per edge; a layered strip of TAIL_STRIP
    rows is right in its TAIL_BORDER rows at the edge."""
    height, width = 64, 96
    tail, features, image = _tail(periodic, height, width, seed=1)
    reference = tail._layered(features, image).numpy()
    from_features, from_image = decoder_tail.composed_ops(tail)
    single = (composed.apply(from_features, features, periodic)
              + composed.apply(from_image, image, periodic)).numpy()
    wrong = np.abs(single - reference).max(axis=(0, 3)) > 1e-4 * np.abs(reference).max()
    middle = slice(2 * TAIL_STRIP, -2 * TAIL_STRIP)
    rows = np.flatnonzero(wrong[:, middle].any(axis=1))
    columns = np.flatnonzero(wrong[middle].any(axis=0))
    edge = list(range(TAIL_BORDER))
    assert rows.tolist() == edge + [height - 1 - i for i in reversed(edge)]
    assert columns.tolist() == ([] if periodic else edge + [width - 1 - i for i in reversed(edge)])

    s = TAIL_STRIP
    top = tail._layered(features[:, : s // 4], image[:, :s]).numpy()
    bottom = tail._layered(features[:, (height - s) // 4 :], image[:, height - s :]).numpy()
    assert _relative(top[:, :TAIL_BORDER], reference[:, :TAIL_BORDER]) < 1e-5
    assert _relative(bottom[:, -TAIL_BORDER:], reference[:, -TAIL_BORDER:]) < 1e-5
    # One more row would not be right: the strip is as thin as it can be.
    assert _relative(bottom[:, -TAIL_BORDER - 1:], reference[:, -TAIL_BORDER - 1:]) > 1e-3


@pytest.mark.parametrize("size,block", [(9, 4), (5, 4), (3, 2), (1, 4)])
def test_fold_input_is_the_same_convolution_on_blocks_of_the_input(size, block):
    """On space_to_depth(x, block), the folded op gives the zero-padded "SAME"
    convolution of x with the original kernel, bias included, everywhere."""
    rng = np.random.default_rng(size)
    kernel = rng.standard_normal((size, size, 5, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    op = composed.LinearOp(tf.constant(kernel[:, :, :, None, None, :]),
                           tf.constant(bias[None, None, :]), 1)
    folded = composed.fold_input(op, block)
    new_size = 2 * -(-(size // 2) // block) + 1
    assert folded.factor == block
    assert tuple(folded.kernel.shape) == (new_size, new_size, block * block * 5, block, block, 3)
    x = tf.constant(rng.standard_normal((2, 4 * block, 6 * block, 5)).astype(np.float32))
    expected = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
    got = composed.apply(folded, tf.nn.space_to_depth(x, block))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # Wrapped columns on blocks are the wrapped columns of the input.
    p, width = size // 2, x.shape[2]
    wrapped = tf.concat([x[:, :, width - p:], x, x[:, :, :p]], axis=2)
    expected = tf.nn.conv2d(tf.pad(wrapped, [[0, 0], [p, p], [0, 0], [0, 0]]),
                            kernel, 1, "VALID") + bias
    got = composed.apply(folded, tf.nn.space_to_depth(x, block), periodic=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=f"factor 1; got factor {block}"):
        composed.fold_input(folded, block)


def test_small_or_unknown_sizes_run_the_layers():
    tail, features, image = _tail(True, 8, 16)
    assert not decoder_tail.fits(tail, features, image)
    np.testing.assert_array_equal(tail([features, image]), tail._layered(features, image))
    unknown = tf.keras.Input((None, None, 16))
    assert not decoder_tail.fits(tail, tf.keras.Input((None, None, 256)), unknown)


def test_composed_ops_map_stride4_features_to_16_subpixel_outputs():
    tail, _, _ = _tail(True, 16, 16)
    from_features, from_image = decoder_tail.composed_ops(tail)
    assert from_features.factor == 4 and tuple(from_features.kernel.shape) == (5, 5, 256, 4, 4, 3)
    assert from_image.factor == 1 and tuple(from_image.kernel.shape) == (9, 9, 16, 1, 1, 3)


def test_bfloat16_tail_stays_close_to_the_layered_chain():
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        tail, features, image = _tail(True, 32, 48)
        features = tf.cast(features, tf.bfloat16)
        fast = tf.cast(tail([features, image]), tf.float32)
        slow = tf.cast(tail._layered(features, image), tf.float32)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert fast.dtype == tf.float32 and _relative(fast, slow) < 3e-2


def test_architecture_flops_count_the_layers_and_the_graph_counts_what_runs():
    shape = (64, 96, 16)
    architecture = zoo.count_flops("deeplabv3plus", shape)
    model = zoo.get_model("deeplabv3plus", input_shape=shape, kernels="cpu")
    executed = zoo.count_flops(model)
    layered = zoo.count_flops(_layer_by_layer(model))
    assert architecture == layered
    # 61% here: at 64x96 the layered strips are a quarter of the rows and a
    # sixth of the columns; 40% at 192x288 (bench/models.py).
    assert executed < 0.7 * architecture
