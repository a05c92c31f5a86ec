"""DeepLabv3+'s kernel sets: the same layers, names and variables as before, the same values.

`tests/data/deeplabv3plus_layers.json` lists, for four configurations, every
layer of `zoo.deeplabv3plus` (name, class, weights and shapes) as the builder
made them before the network was rewritten as a definition (commit 0132d54,
fresh session). `tests/data/deeplabv3plus_constant_weights.h5` is a weights
file that builder wrote (`save_weights`, the format of the checkpoints'
`model-weights.h5`) with weight i (in `model.weights` order) set to
(i + 1) / 16, its datasets then compressed (gzip, scale-offset) to fit.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import kernels as zoo_kernels
from zoo.deeplabv3plus import (
    ASPP,
    DeconvDecoderTail,
    _bottleneck_v2,
    _transposed_conv,
    default_kernels,
)

DATA = Path(__file__).resolve().parent / "data"
RECORDED = json.loads((DATA / "deeplabv3plus_layers.json").read_text())
SHAPE = (32, 48, 16)
KERNELS = ["reference", "cpu"]
POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]


@pytest.fixture(scope="module")
def built():
    """`built(config, kernels)`: a model of a recorded configuration, built once."""
    cache = {}

    def build(config, kernels):
        if (config, kernels) not in cache:
            tf.keras.utils.set_random_seed(0)
            cache[config, kernels] = zoo.get_model("deeplabv3plus", input_shape=SHAPE,
                                                   kernels=kernels, **RECORDED[config]["options"])
        return cache[config, kernels]

    return build


def _layers(model):
    return [[layer.name, type(layer).__name__, [[w.name, list(w.shape)] for w in layer.weights]]
            for layer in model.layers]


@pytest.mark.parametrize("config,kernels", [
    ("default", "cpu"), ("default", "reference"),
    pytest.param("stride16_bilinear", "reference", marks=pytest.mark.slow),
    pytest.param("periodic", "cpu", marks=pytest.mark.slow),
    pytest.param("stride16_periodic", "reference", marks=pytest.mark.slow),
])
def test_layers_and_weights_are_those_of_the_builder_before(built, config, kernels):
    """Layer names in order (TF checkpoints number the layers), weight names and
    shapes in order (`.h5` weights load by position); the CPU kernels also keep
    the classes of the layers with weights (`.weights.h5` names layers by class)."""
    model = built(config, kernels)
    recorded, layers = RECORDED[config]["layers"], _layers(model)
    assert [layer[0] for layer in layers] == [layer[0] for layer in recorded]
    assert [w for layer in layers for w in layer[2]] == [w for layer in recorded for w in layer[2]]
    assert model.count_params() == RECORDED[config]["count_params"]
    if kernels == "cpu":
        assert [layer[1] for layer in layers if layer[2]] == [
            layer[1] for layer in recorded if layer[2]]
    else:  # Standard layers only.
        assert {layer[1] for layer in layers if layer[2]} <= {
            "Conv2D", "BatchNormalization", "Conv2DTranspose", "PeriodicConv2DTranspose",
            "ASPP", "DeconvDecoderTail"}


def test_default_configuration_count_and_endpoint_layers(built):
    assert RECORDED["default"]["count_params"] == 43_760_323
    model = built("default", "reference")
    assert type(model.get_layer("conv4_block2_2_conv")) is tf.keras.layers.Conv2D
    assert model.get_layer("conv4_block2_2_conv").dilation_rate == (2, 2)
    assert model.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    assert model.get_layer("aspp").dilation_rates == [12, 24, 36]


@pytest.mark.parametrize("kernels", KERNELS)
def test_a_weights_file_written_before_the_rewrite_loads(built, kernels):
    model = built("default", kernels)
    model.load_weights(str(DATA / "deeplabv3plus_constant_weights.h5"))
    for i, weight in enumerate(model.weights):
        np.testing.assert_array_equal(weight.numpy(), np.full(weight.shape, (i + 1) / 16),
                                      err_msg=weight.name)


def test_weights_of_one_kernel_set_load_into_the_other(built, tmp_path):
    cpu, reference = built("default", "cpu"), built("default", "reference")
    for variable in cpu.weights:  # Values that tell the variables apart.
        variable.assign(tf.random.stateless_uniform(variable.shape, (1, len(variable.name)),
                                                    0.5, 1.5))
    cpu.save_weights(str(tmp_path / "cpu.h5"))
    prefix = tf.train.Checkpoint(model=cpu).write(str(tmp_path / "tf" / "cpu"))
    reference.load_weights(str(tmp_path / "cpu.h5"))
    for a, b in zip(cpu.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    for variable in reference.weights:
        variable.assign(tf.zeros_like(variable))
    status = tf.train.Checkpoint(model=reference).read(prefix)
    status.assert_existing_objects_matched()
    for a, b in zip(cpu.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # Keras' `.weights.h5` names layers by class (RecomputingConv2D vs Conv2D):
    # the builder loads it through a model of the set that wrote it.
    cpu.save_weights(str(tmp_path / "cpu.weights.h5"))
    with pytest.raises(ValueError):
        reference.load_weights(str(tmp_path / "cpu.weights.h5"))
    loaded = zoo.deeplabv3plus(input_shape=SHAPE, kernels="reference",
                               weights=str(tmp_path / "cpu.weights.h5"))
    for a, b in zip(cpu.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_unknown_kernels_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"kernels must be one of 'reference', 'cpu' or None "
                                         r"\(chosen by device\); received 'gpu'\."):
        zoo.deeplabv3plus(input_shape=SHAPE, kernels="gpu")


def test_default_kernels_follow_the_visible_devices(monkeypatch):
    assert tf.config.list_physical_devices("GPU") == []  # The test machines have none.
    kernels, reason = zoo_kernels.default_kernels()
    assert (kernels, reason) == ("cpu", "no GPU visible: the CPU kernels, measured faster on CPU")
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    kernels, reason = default_kernels()  # As train.py and predict log it.
    assert kernels == "reference" and reason.startswith("1 GPU(s) visible")
    assert zoo_kernels.resolve_kernels(None) == "reference"


def test_check_jit_names_a_kernel_that_cannot_be_compiled(monkeypatch):
    assert zoo_kernels.check_jit("reference") == "reference"
    assert zoo_kernels.check_jit("cpu") == "cpu"  # Every CPU kernel compiles (tests below).
    monkeypatch.setitem(zoo_kernels.NOT_XLA_COMPILABLE, "cpu",
                        {"RecomputingConv2D": "a gradient taken inside a gradient"})
    with pytest.raises(ValueError) as error:
        zoo_kernels.check_jit("cpu")
    assert str(error.value) == (
        "kernels='cpu': RecomputingConv2D cannot be XLA-compiled (a gradient taken inside a "
        "gradient); use kernels='reference' with jit_compile.")
    with pytest.raises(ValueError, match="received 'xla'"):
        zoo_kernels.check_jit("xla")


def test_a_command_s_choice_of_kernels_and_why(monkeypatch):
    assert zoo_kernels.choose_kernels("reference", given="--kernels") == ("reference",
                                                                          "--kernels")
    assert zoo_kernels.choose_kernels() == zoo_kernels.default_kernels()  # cpu here
    assert zoo_kernels.choose_kernels(None, jit_compile=True)[0] == "cpu"
    with pytest.raises(ValueError, match="received 'fast'"):
        zoo_kernels.choose_kernels("fast")
    monkeypatch.setitem(zoo_kernels.NOT_XLA_COMPILABLE, "cpu", {"AtrousConv2D": "a reason"})
    assert zoo_kernels.choose_kernels("cpu") == ("cpu", "kernels=")  # no XLA asked
    with pytest.raises(ValueError, match="AtrousConv2D cannot be XLA-compiled"):
        zoo_kernels.choose_kernels("cpu", jit_compile=True)


# The pieces that differ between the kernel sets, each as a small model of the
# set: (inputs' shapes, builder(kernels, inputs) -> output tensor).
def _unit(stride, dilation, periodic):
    def build(kernels, inputs):
        (x,) = inputs
        # Training-mode batch norm + ReLU before the unit, as in the network:
        # the CPU kernels' convolutions recompute it in the backward pass.
        return _bottleneck_v2(x, 4, stride, dilation, "conv3_block1", periodic, kernels,
                              conv_shortcut=stride == 1, subsampling_unit=stride > 1)
    return [(8, 12, 16)], build


def _aspp(periodic):
    def build(kernels, inputs):
        return ASPP([2, 4, 6], num_filters=8, periodic_padding=periodic, kernels=kernels,
                    name="aspp")(inputs[0])
    return [(6, 8, 16)], build


def _deconv(periodic):
    def build(kernels, inputs):
        return _transposed_conv(8, "deconv", periodic, kernels)(inputs[0])
    return [(5, 6, 8)], build


def _tail(periodic):
    def build(kernels, inputs):
        return DeconvDecoderTail(3, periodic=periodic, kernels=kernels, name="tail")(inputs)
    # The smallest map the composed tail runs on (float16 convolutions are slow
    # on CPUs).
    return [(4, 4, 256), (16, 16, 16)], build


PIECES = {
    "unit stride 2": _unit(2, 1, False), "unit dilated periodic": _unit(1, 2, True),
    "aspp": _aspp(False), "aspp periodic": _aspp(True),
    "deconv": _deconv(False), "deconv periodic": _deconv(True),
    "tail": _tail(False), "tail periodic": _tail(True),
}
# Batch sizes: the image pooling's batch norm normalizes over the batch alone
# (1x1 maps), with a zero gradient for 2 samples and a badly conditioned one
# for a few.
BATCH = {"aspp": 8, "aspp periodic": 8, "tail": 1, "tail periodic": 1}


def _piece_models(piece):
    shapes, build = PIECES[piece]
    models = {}
    for kernels in KERNELS:
        tf.keras.utils.set_random_seed(0)
        inputs = [tf.keras.Input(shape) for shape in shapes]
        models[kernels] = tf.keras.Model(inputs, build(kernels, inputs))
    models["cpu"].set_weights(models["reference"].get_weights())
    for model in models.values():  # Biases that are not zero, for the tails.
        for variable in model.trainable_weights:
            if "bias" in variable.name:
                variable.assign(tf.random.stateless_normal(variable.shape, (2, 3), stddev=0.1))
    rng = np.random.default_rng(0)
    data = [tf.constant(rng.standard_normal((BATCH.get(piece, 3), *shape), dtype=np.float32))
            for shape in shapes]
    return models, data


def _step(model, data, jit_compile=False):
    """Outputs, then gradients of a fixed loss for the inputs and the trainable weights."""
    target = tf.random.stateless_normal((data[0].shape[0], *model.output_shape[1:]), (4, 5))

    @tf.function(jit_compile=jit_compile)
    def step(*data):
        with tf.GradientTape() as tape:
            tape.watch(data)
            outputs = tf.cast(model(list(data), training=True), tf.float32)
            loss = tf.reduce_sum(outputs * target)
        return [outputs, *tape.gradient(loss, [*data, *model.trainable_weights])]

    return [value.numpy().astype(np.float64) for value in step(*data)]


def _errors(values, truth):
    """max |value - truth| of each tensor, relative to its truth's largest magnitude."""
    return np.array([np.abs(v - t).max() / np.abs(t).max()
                     for v, t in zip(values, truth, strict=True)])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("piece", sorted(PIECES))
def test_cpu_kernels_compute_what_the_reference_computes(piece, policy):
    """Outputs and gradients (inputs and every weight) of both kernel sets against
    the reference in float32; in float16 and bfloat16 each set is as close to
    that as the reference itself is, within the dtype's rounding."""
    tf.keras.mixed_precision.set_global_policy("float32")
    models, data = _piece_models(piece)
    truth = _step(models["reference"], data)
    if policy == "float32":
        np.testing.assert_array_less(_errors(_step(models["cpu"], data), truth), 1e-5)
        return
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        low, _ = _piece_models(piece)
        for model in low.values():
            model.set_weights(models["reference"].get_weights())
        errors = {kernels: _errors(_step(model, data), truth) for kernels, model in low.items()}
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    epsilon = {"mixed_float16": 2**-11, "mixed_bfloat16": 2**-8}[policy]
    # Both sets round inputs, weights and partial sums to the low dtype, and a
    # training-mode batch norm's backward pass amplifies that in the gradients
    # of what precedes it (measured up to 0.08 in float16 and 0.36 in bfloat16
    # for the reference). The CPU set is no further from float32 than a few
    # times the reference, tensor by tensor.
    np.testing.assert_array_less(errors["cpu"], 4 * np.maximum(errors["reference"], epsilon))
    assert errors["cpu"][0] < 16 * epsilon  # The outputs: no batch norm backward.


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("piece", ["unit dilated periodic", "unit stride 2", "aspp", "tail"])
def test_kernels_compile_with_xla(piece, kernels):
    """Forward and gradient under `tf.function(jit_compile=True)` on the CPU, the
    same values as without XLA."""
    models, data = _piece_models(piece)
    expected = _step(models[kernels], data)
    compiled = _step(models[kernels], data, jit_compile=True)
    np.testing.assert_array_less(_errors(compiled, expected), 1e-5)


@pytest.mark.slow
def test_whole_network_outputs_and_gradients_agree_between_kernel_sets():
    """The full default network (composed decoder tail included), one training-mode
    forward and backward pass of both kernel sets with the same weights."""
    tf.keras.utils.set_random_seed(0)
    reference = zoo.deeplabv3plus(input_shape=SHAPE, kernels="reference")
    cpu = zoo.deeplabv3plus(input_shape=SHAPE, kernels="cpu")
    cpu.set_weights(reference.get_weights())
    data = [tf.constant(np.random.default_rng(0).standard_normal((3, *SHAPE),
                                                                 dtype=np.float32))]
    truth, ours = _step(reference, data), _step(cpu, data)
    largest = max(np.abs(t).max() for t in truth[2:])
    names = ["logits", "input", *(v.name for v in reference.trainable_weights)]
    for name, value, expected in zip(names, ours, truth, strict=True):
        # Biases right before a training-mode batch norm have a zero gradient in
        # exact arithmetic: rounding noise, compared at the scale of the others.
        scale = max(np.abs(expected).max(), 1e-3 * largest)
        assert np.abs(value - expected).max() < 1e-4 * scale, name
