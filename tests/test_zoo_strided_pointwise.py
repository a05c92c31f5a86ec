"""Strided 1x1 convolutions avoid TF 2.18's oneDNN crash and compute the same values."""

import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_python

from zoo.periodic import conv2d


def test_subsampled_pointwise_conv_equals_strided_conv():
    x = np.random.default_rng(0).normal(size=(2, 7, 10, 4)).astype(np.float32)
    inputs = tf.keras.Input((7, 10, 4))
    model = tf.keras.Model(inputs, conv2d(inputs, 5, 1, strides=2, name="td"))
    kernel, bias = model.get_layer("td").get_weights()
    expected = tf.nn.conv2d(x, kernel, strides=2, padding="VALID") + bias
    assert model.output_shape == (None, 4, 5, 5)
    np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert [w.shape for w in model.get_layer("td").get_weights()] == [(1, 1, 4, 5), (5,)]


@pytest.mark.slow
def test_tiramisu_trains_with_onednn_on(tmp_path):
    # With a plain strided 1x1 Conv2D this process dies of "double free or
    # corruption" within two epochs (TF 2.18.1, oneDNN on).
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent("""
        import os
        import numpy as np
        import tensorflow as tf
        import zoo
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
        model = zoo.get_model("tiramisu", input_shape=(64, 96, 16), blocks=[1, 1, 2],
                              growth_rate=4, initial_filters=8, kernel_size=3)
        model.compile(tf.keras.optimizers.SGD(1e-3), zoo.get_loss("weighted_ce"))
        x = np.random.rand(32, 64, 96, 16).astype("float32")
        y = np.random.randint(0, 3, (32, 64, 96))
        model.fit(x, y, batch_size=2, epochs=2, verbose=0)
        print("FIT OK")
    """))
    proc = run_python([script], env_overrides={"TF_ENABLE_ONEDNN_OPTS": None})
    assert "FIT OK" in proc.stdout
