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


def _tail_net(classes, seed):
    from zoo.deeplabv3plus import DeconvDecoderTail

    tf.keras.utils.set_random_seed(seed)
    image = tf.keras.Input((16, 16, 16))
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
