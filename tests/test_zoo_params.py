"""Parameter counts at the full paper configurations (768x1152x16, built, not run)."""

import pytest
import tensorflow as tf

import zoo
from zoo.tiramisu import CODE_DEFAULT


def _batch_norm_params(model):
    return sum(
        w.shape.num_elements()
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, tf.keras.layers.BatchNormalization)
        for w in layer.weights
    )


@pytest.mark.slow
def test_deeplabv3plus_has_the_paper_code_parameter_count():
    model = zoo.deeplabv3plus()
    assert model.input_shape == (None, 768, 1152, 16)
    # 43,669,251 computed from the paper's code without batch norm (docs/DATA.md).
    assert model.count_params() - _batch_norm_params(model) == 43_669_251
    assert model.count_params() == 43_760_323
    assert abs(model.count_params() / 43.7e6 - 1) < 0.05


@pytest.mark.slow
def test_tiramisu_paper_and_code_default_parameter_counts():
    model = zoo.tiramisu()
    assert model.count_params() == 7_504_835
    # The paper's code also built an unused 1x1 transition after the bottleneck
    # (544 -> 544 channels); with it the count is the published ~7.8M.
    assert model.count_params() + 544 * 544 + 544 == 7_801_315
    assert zoo.tiramisu(**CODE_DEFAULT).count_params() == 2_960_883


@pytest.mark.slow
def test_tfm_reference_parameter_count():
    assert zoo.deeplabv3plus_tfm().count_params() == 40_445_635
