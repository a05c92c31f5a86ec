"""zoo builders: every registry entry at 64x96x16, shapes, training, saving, precision."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.deeplabv3plus import ENDPOINTS, _unit_plan

SHAPE = (64, 96, 16)
BATCH = 2


@pytest.fixture(scope="module")
def models():
    """One model per registry entry, built once (ResNet-50 builds take seconds)."""
    tf.keras.utils.set_random_seed(0)
    return {name: zoo.get_model(name, input_shape=SHAPE) for name in zoo.MODELS}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *SHAPE)).astype(np.float32)
    y = rng.choice(3, size=(BATCH, *SHAPE[:2]), p=[0.8, 0.05, 0.15]).astype(np.int32)
    return x, y


def test_registry_lists_the_builders():
    assert sorted(zoo.MODELS) == ["deeplabv3plus", "deeplabv3plus_tfm", "tiramisu"]


def test_unknown_model_error_lists_known_names():
    with pytest.raises(ValueError, match="'unet'.*deeplabv3plus, deeplabv3plus_tfm, tiramisu"):
        zoo.get_model("unet")


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("deeplabv3plus", {"output_stride": 32}, r"output_stride must be one of \[8, 16\]; "
                                                 r"received 32"),
        ("deeplabv3plus", {"decoder": "deconv"}, "decoder must be one of.*received 'deconv'"),
        ("deeplabv3plus", {"input_shape": (60, 96, 16)}, r"multiple of 8.*\(60, 96, 16\)"),
        ("deeplabv3plus_tfm", {"input_shape": (64, 96)}, r"\(height, width, channels\)"),
        ("tiramisu", {"input_shape": (64, 40, 16)}, r"multiple of 16.*\(64, 40, 16\)"),
        ("tiramisu", {"blocks": (3,)}, r"blocks must be at least two.*\(3,\)"),
        ("tiramisu", {"kernel_size": 4}, "kernel_size must be a positive odd int; received 4"),
        ("tiramisu", {"num_classes": 0}, "num_classes must be a positive int; received 0"),
        ("tiramisu", {"weights": "/nonexistent.weights.h5"}, "'/nonexistent.weights.h5' does not"),
    ],
)
def test_builders_reject_bad_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.get_model(name, **{"input_shape": SHAPE, **kwargs})


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_output_is_full_resolution_float32_logits(models, batch, name):
    model = models[name]
    assert model.output_shape == (None, *SHAPE[:2], 3)
    out = model(batch[0], training=False)
    assert out.shape == (BATCH, *SHAPE[:2], 3)
    assert out.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_one_training_step_lowers_the_loss(models, batch, name):
    if name == "tiramisu":
        # Without dropout, so that the two losses of the same batch differ by
        # the update only.
        model = zoo.tiramisu(input_shape=SHAPE, dropout=0.0)
    else:
        model = tf.keras.models.clone_model(models[name])  # Keeps the fixture untrained.
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01),
                  loss=zoo.get_loss("weighted_ce", zoo.class_weights([0.8, 0.05, 0.15])))
    first = model.train_on_batch(*batch)  # Loss before the update.
    second = model.train_on_batch(*batch)  # Loss after one update.
    assert np.isfinite(first)
    assert second < first


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_keras_round_trip_and_weights_path(models, batch, name, tmp_path):
    model = models[name]
    expected = model(batch[0], training=False).numpy()
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_array_equal(loaded(batch[0], training=False).numpy(), expected)

    model.save_weights(tmp_path / "model.weights.h5")
    tf.keras.utils.set_random_seed(1)  # Other initial weights, overwritten by the file.
    reloaded = zoo.get_model(name, input_shape=SHAPE, weights=str(tmp_path / "model.weights.h5"))
    np.testing.assert_array_equal(reloaded(batch[0], training=False).numpy(), expected)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_mixed_precision_build_gives_float32_logits(batch, name, policy):
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        model = zoo.get_model(name, input_shape=(32, 48, 16))
        compute = {layer.compute_dtype for layer in model.layers if layer.name != "logits"}
        out = model(batch[0][:1, :32, :48], training=False)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert compute - {policy.removeprefix("mixed_")} <= {"float32"}  # Input layer only.
    assert policy.removeprefix("mixed_") in compute
    assert out.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()
    assert model.get_layer("logits").compute_dtype == "float32"


def test_deeplab_encoder_taps_by_endpoint_name(models):
    model = models["deeplabv3plus"]
    low = model.get_layer(ENDPOINTS["low_level"]).output
    encoder = model.get_layer(ENDPOINTS["encoder"]).output
    assert low.shape == (None, SHAPE[0] // 4, SHAPE[1] // 4, 64)
    assert encoder.shape == (None, SHAPE[0] // 8, SHAPE[1] // 8, 2048)


def test_unit_plan_dilates_like_tf_slim():
    plan = _unit_plan(8)
    assert plan["conv2", 3] == (2, 1)  # Reaches stride 8 here.
    assert plan["conv3", 4] == (1, 1)  # Stride suppressed; later units dilate.
    assert plan["conv4", 1] == (1, 2) and plan["conv4", 6] == (1, 2)
    assert plan["conv5", 1] == (1, 4)
    plan = _unit_plan(16)
    assert plan["conv3", 4] == (2, 1)
    assert plan["conv4", 6] == (1, 1) and plan["conv5", 3] == (1, 2)


def test_deeplab_options_stride16_and_bilinear():
    model = zoo.deeplabv3plus(input_shape=(64, 96, 16), output_stride=16, decoder="bilinear")
    assert model.output_shape == (None, 64, 96, 3)
    assert model.get_layer(ENDPOINTS["encoder"]).output.shape[1:3] == (4, 6)
    assert model.get_layer("aspp").get_config()["dilation_rates"] == [6, 12, 18]
    assert "decoder_upsample2" in [layer.name for layer in model.layers]
