"""Fine-tuning starts: weights matched by name and shape, stems adapted to new channels."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.transfer import adapt_input_channels, load_matching_weights


def _net(channels, classes, seed):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((8, 12, channels))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="body_conv")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Conv2D(classes, 1, name="head")(x))


def test_adapt_rule_against_numpy():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 5)).astype(np.float32)
    adapted = adapt_input_channels(kernel, 16)
    assert adapted.shape == (3, 3, 16, 5)
    expected = kernel.mean(axis=2) * 3 / 16
    for c in range(16):
        np.testing.assert_allclose(adapted[:, :, c], expected, rtol=1e-6)
    # An input whose channels are all alike gives the old response.
    np.testing.assert_allclose(adapted.sum(axis=2), kernel.sum(axis=2), rtol=1e-5)


def test_adapt_by_name_copies_shared_channels_and_spreads_the_dropped_ones():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    a, b, c, d = (kernel[:, :, i] for i in range(4))
    adapted = adapt_input_channels(kernel, 3, ["A", "B", "C", "D"], ["b", "D", "E"])
    np.testing.assert_array_equal(adapted[:, :, 0], b)
    np.testing.assert_array_equal(adapted[:, :, 1], d)
    np.testing.assert_allclose(adapted[:, :, 2], a + c, rtol=1e-6)  # E takes A's and C's share.
    np.testing.assert_allclose(adapted.sum(axis=2), kernel.sum(axis=2), rtol=1e-5)
    # Two new channels share the dropped ones' filters equally.
    adapted = adapt_input_channels(kernel, 4, list("ABCD"), list("BEFD"))
    np.testing.assert_allclose(adapted[:, :, 1], (a + c) / 2, rtol=1e-6)
    np.testing.assert_array_equal(adapted[:, :, 1], adapted[:, :, 2])
    # Only the order differs: a permutation. Nothing dropped: the new one starts at 0.
    np.testing.assert_array_equal(adapt_input_channels(kernel, 4, list("ABCD"), list("DCBA")),
                                  kernel[:, :, ::-1])
    grown = adapt_input_channels(kernel, 5, list("ABCD"), list("ABCDE"))
    np.testing.assert_array_equal(grown[:, :, :4], kernel)
    assert not grown[:, :, 4].any()


def test_channel_names_that_do_not_fit_are_refused(tmp_path):
    kernel = np.zeros((3, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="source_channels names 3 channels \\(A, B, C\\), "
                                         "but the checkpoint's kernel reads 4"):
        adapt_input_channels(kernel, 2, list("ABC"), list("AB"))
    with pytest.raises(ValueError, match="target_channels repeats a channel: A, a"):
        adapt_input_channels(kernel, 2, list("ABCD"), ["A", "a"])
    path = str(tmp_path / "rgb.h5")
    _net(channels=3, classes=5, seed=1).save_weights(path)
    with pytest.raises(ValueError, match="go together; received only target_channels"):
        load_matching_weights(_net(16, 3, 2), path, target_channels=list("ABCDEFGHIJKLMNOP"))
    with pytest.raises(ValueError, match="target_channels names 3 channels .* model's input "
                                         "has 16"):
        load_matching_weights(_net(16, 3, 2), path, source_channels=list("RGB"),
                              target_channels=list("RGB"))


def test_loads_matching_layers_skips_new_head_and_adapts_stem(tmp_path):
    source = _net(channels=3, classes=5, seed=1)
    path = str(tmp_path / "rgb.h5")
    source.save_weights(path)  # by layer name (.h5, not .weights.h5)
    target = _net(channels=16, classes=3, seed=2)
    report = load_matching_weights(target, path)

    assert report["loaded"] == ["stem_bn", "body_conv"]
    assert report["adapted"] == ["stem_conv"]
    assert [name for name, _ in report["skipped"]] == ["head"]
    assert "(1, 1, 4, 5)" in report["skipped"][0][1]
    np.testing.assert_array_equal(target.get_layer("body_conv").get_weights()[0],
                                  source.get_layer("body_conv").get_weights()[0])
    kernel, bias = source.get_layer("stem_conv").get_weights()
    np.testing.assert_allclose(target.get_layer("stem_conv").get_weights()[0],
                               adapt_input_channels(kernel, 16), rtol=1e-6)
    np.testing.assert_array_equal(target.get_layer("stem_conv").get_weights()[1], bias)


def test_backbone_only_needs_a_known_model(tmp_path):
    with pytest.raises(ValueError, match="no backbone definition for model 'mine'"):
        load_matching_weights(_net(3, 3, 0), str(tmp_path / "x.h5"), modules="backbone",
                              model_name="mine")


def test_unreadable_source_is_named(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=f"cannot read weights from {bad}"):
        load_matching_weights(_net(3, 3, 0), str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        load_matching_weights(_net(3, 3, 0), str(tmp_path / "missing.h5"))


def test_freezing_the_encoder_of_a_zoo_model():
    import zoo

    model = zoo.get_model("tiramisu", input_shape=(32, 48, 16), blocks=[1, 1, 2], growth_rate=4,
                          initial_filters=8, kernel_size=3)
    changed = zoo.set_backbone_trainable(model, "tiramisu", False)
    assert "stem_conv" in changed and "down2_transition_conv" in changed
    assert not any(name.startswith(("up", "bottleneck", "logits")) for name in changed)
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    assert frozen == set(changed)
    with pytest.raises(ValueError, match="no backbone definition for model 'unet'"):
        zoo.set_backbone_trainable(model, "unet", False)


@pytest.mark.slow
def test_tf_models_official_backbone_checkpoint_loads(tmp_path):
    import zoo

    def backbone(model):
        return [m for m in model.submodules if type(m).__name__ == "DilatedResNet"][0]

    tf.keras.utils.set_random_seed(1)
    source = zoo.get_model("deeplabv3plus_tfm", input_shape=(64, 96, 16), output_stride=16)
    prefix = tf.train.Checkpoint(backbone=backbone(source)).write(str(tmp_path / "backbone"))
    tf.keras.utils.set_random_seed(2)
    target = zoo.get_model("deeplabv3plus_tfm", input_shape=(64, 96, 16), output_stride=16)
    assert not np.array_equal(backbone(target).weights[0].numpy(),
                              backbone(source).weights[0].numpy())
    report = load_matching_weights(target, prefix)
    assert report["loaded"] == [backbone(target).name]
    for a, b in zip(backbone(source).weights, backbone(target).weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="has no such backbone"):
        load_matching_weights(_net(3, 3, 0), prefix)


def _tail_net(classes, seed, channels=16):
    from zoo.deeplabv3plus import DeconvDecoderTail

    tf.keras.utils.set_random_seed(seed)
    image = tf.keras.Input((16, 16, channels))
    features = tf.keras.layers.Conv2D(256, 1, strides=4, name="features")(image)
    return tf.keras.Model(image, DeconvDecoderTail(classes, name="decoder_tail")([features, image]))


def test_a_new_head_inside_a_nested_layer_keeps_the_other_sublayers(tmp_path):
    source = _tail_net(classes=5, seed=1)
    path = str(tmp_path / "five.h5")
    source.save_weights(path)
    target = _tail_net(classes=3, seed=2)
    report = load_matching_weights(target, path)

    assert report["loaded"] == ["features", "decoder_tail (12 of 14 weights)"]
    assert report["skipped"] == [
        ("decoder_tail/decoder_logits/kernel", "shapes (1, 1, 256, 5) vs (1, 1, 256, 3)"),
        ("decoder_tail/decoder_logits/bias", "shapes (5,) vs (3,)"),
    ]
    old = {w.name: w.numpy() for w in source.get_layer("decoder_tail").weights}
    for weight in target.get_layer("decoder_tail").weights:
        if "logits" not in weight.name:
            np.testing.assert_array_equal(weight.numpy(), old[weight.name])


def test_the_input_skip_inside_the_decoder_tail_is_adapted(tmp_path):
    source = _tail_net(classes=3, seed=1, channels=4)
    path = str(tmp_path / "four.h5")
    source.save_weights(path)
    target = _tail_net(classes=3, seed=2, channels=3)
    report = load_matching_weights(target, path)

    skip = "decoder_tail/decoder_skip_conv1/kernel"
    assert report["adapted"] == ["features", skip]
    assert report["loaded"] == ["decoder_tail (13 of 14 weights)"]
    assert report["skipped"] == []
    assert report["copied_channels"] == {"features": [], skip: []}
    assert report["new_channels"] == {"features": [0, 1, 2], skip: [0, 1, 2]}
    old = {w.name: w.numpy() for w in source.get_layer("decoder_tail").weights}
    for weight in target.get_layer("decoder_tail").weights:
        expected = old[weight.name]
        if weight.name == skip + ":0":
            expected = adapt_input_channels(expected, 3)
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6, err_msg=weight.name)


def _tiny_tiramisu(channels, seed):
    import zoo

    tf.keras.utils.set_random_seed(seed)
    return zoo.get_model("tiramisu", input_shape=(32, 48, channels), num_classes=3,
                         blocks=[1, 1, 2], growth_rate=4, initial_filters=8, kernel_size=3,
                         dropout=0)


def test_tiramisu_stem_copies_channels_by_name(tmp_path):
    source = _tiny_tiramisu(4, seed=1)
    path = str(tmp_path / "abcd.h5")
    source.save_weights(path)
    target = _tiny_tiramisu(3, seed=2)
    report = load_matching_weights(target, path, source_channels=["A", "B", "C", "D"],
                                   target_channels=["B", "D", "E"])

    assert report["adapted"] == ["stem_conv"] and report["skipped"] == []
    assert report["copied_channels"] == {"stem_conv": ["B", "D"]}
    assert report["new_channels"] == {"stem_conv": ["E"]}
    assert "stem_conv" not in report["loaded"] and "logits_conv" in report["loaded"]
    old, new = source.get_layer("stem_conv").kernel.numpy(), target.get_layer("stem_conv").kernel
    np.testing.assert_array_equal(new[:, :, 0], old[:, :, 1])
    np.testing.assert_array_equal(new[:, :, 1], old[:, :, 3])
    np.testing.assert_allclose(new[:, :, 2], old[:, :, 0] + old[:, :, 2], rtol=1e-6)

    # A channel added to the source's set starts at zero: the same logits while it is 0.
    grown = _tiny_tiramisu(5, seed=3)
    report = load_matching_weights(grown, path, source_channels=list("ABCD"),
                                   target_channels=list("ABCDE"))
    assert report["new_channels"] == {"stem_conv": ["E"]}
    x = np.random.default_rng(0).normal(size=(1, 32, 48, 4)).astype(np.float32)
    np.testing.assert_allclose(grown(np.concatenate([x, 0 * x[..., :1]], -1), training=False),
                               source(x, training=False), rtol=1e-5, atol=1e-5)


def test_only_layers_reading_the_input_are_adapted(tmp_path):
    def net(channels):
        inputs = tf.keras.Input((8, 12, channels))
        x = tf.keras.layers.ZeroPadding2D(1, name="pad")(inputs)
        x = tf.keras.layers.Conv2D(4, 3, name="stem_conv")(x)
        x = tf.keras.layers.Concatenate(name="concat")([inputs, x])
        return tf.keras.Model(inputs, tf.keras.layers.Conv2D(2, 1, name="body_conv")(x))

    path = str(tmp_path / "two.h5")
    source = net(channels=2)
    source.save_weights(path)
    report = load_matching_weights(net(channels=3), path)
    assert report["adapted"] == ["stem_conv"]  # Through the padding.
    # body_conv reads 2 + 4 channels, then 3 + 4: not all of them input channels.
    assert report["skipped"] == [("body_conv", "shapes (1, 1, 6, 2), (2,) vs (1, 1, 7, 2), (2,) "
                                  "(the model's input among other maps: not adapted)")]
    target = net(channels=2)
    report = load_matching_weights(target, path, source_channels=["A", "B"],
                                   target_channels=["B", "A"])
    assert report["adapted"] == ["stem_conv"] and report["loaded"] == []
    assert report["skipped"] == [("body_conv", "reads the model's input among other maps, "
                                               "whose channels are not matched by name")]
    np.testing.assert_array_equal(target.get_layer("stem_conv").kernel.numpy(),
                                  source.get_layer("stem_conv").kernel.numpy()[:, :, ::-1])


@pytest.mark.slow
def test_deeplabv3plus_adapts_its_stem_and_its_input_skip_by_name(tmp_path):
    import zoo

    tf.keras.utils.set_random_seed(1)
    source = zoo.get_model("deeplabv3plus", input_shape=(32, 48, 4), output_stride=16)
    path = str(tmp_path / "abcd.h5")
    source.save_weights(path)
    tf.keras.utils.set_random_seed(2)
    target = zoo.get_model("deeplabv3plus", input_shape=(32, 48, 3), output_stride=16)
    report = load_matching_weights(target, path, source_channels=list("ABCD"),
                                   target_channels=list("BDE"))

    skip = "decoder_tail/decoder_skip_conv1/kernel"
    assert report["adapted"] == ["conv1_conv", skip]
    assert report["skipped"] == []
    assert report["copied_channels"] == {"conv1_conv": ["B", "D"], skip: ["B", "D"]}
    skips = [model.get_layer("decoder_tail").convs["skip_conv1"] for model in (source, target)]
    stems = [model.get_layer("conv1_conv") for model in (source, target)]
    for old, new in ([layer.kernel.numpy() for layer in pair] for pair in (skips, stems)):
        np.testing.assert_array_equal(new[:, :, :2], old[:, :, [1, 3]])
        np.testing.assert_allclose(new[:, :, 2], old[:, :, 0] + old[:, :, 2], rtol=1e-6)
