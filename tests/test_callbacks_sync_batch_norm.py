"""sync_batch_norm: every batch norm, nested ones too, becomes Horovod's, names and weights kept."""

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from callbacks import sync_batch_norm


class _Holder(tf.keras.layers.Layer):
    """A layer that owns a batch norm (as DeepLabv3+'s ASPP does): cloning would miss it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = tf.keras.layers.BatchNormalization(name="held_bn")

    def call(self, x, training=None):
        return self.bn(x, training=training)


def _model():
    inputs = tf.keras.Input((6, 8, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="top_bn")(x)
    x = tf.keras.Sequential([tf.keras.layers.BatchNormalization(name="inner_bn")], name="inner")(x)
    return tf.keras.Model(inputs, _Holder(name="holder")(x))


def test_every_batch_norm_is_synced_in_place(tmp_path):
    hvd.init()  # one process: the layer is batch norm itself
    model = _model()
    x = np.random.default_rng(0).normal(size=(4, 6, 8, 3)).astype("float32")
    names = [w.name for w in model.weights]
    model.save_weights(tmp_path / "before.h5")
    reference = tf.keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    for layer in reference.submodules:  # the same arithmetic, unfused, without Horovod
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.fused = False

    assert sorted(sync_batch_norm(model)) == ["held_bn", "inner_bn", "top_bn"]
    layers = [m for m in model.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]
    assert [type(m) for m in layers] == [hvd.SyncBatchNormalization] * 3
    assert [w.name for w in model.weights] == names
    np.testing.assert_allclose(model(x, training=True), reference(x, training=True),
                               rtol=1e-6, atol=1e-6)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # moving statistics too
    # Checkpoints of either kind load into the other.
    model.load_weights(tmp_path / "before.h5")
    model.save_weights(tmp_path / "after.h5")
    fresh = _model()
    fresh.load_weights(tmp_path / "after.h5")
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sync_batch_norm(model) == []  # already synced
