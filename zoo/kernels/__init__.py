"""DeepLabv3+'s fast CPU kernels, and the choice between them and the reference.

`zoo.deeplabv3plus` is written with standard Keras layers: the "reference"
kernels, what cuDNN and XLA know how to run. `kernels="cpu"` computes the
same network with implementations measured faster on CPU (2-core Intel Xeon
and AMD Zen 4, TensorFlow 2.18 with oneDNN; see docs/PERFORMANCE.md), layer
for layer with the same variables:

- `recompute.RecomputingConv2D`: the ResNet units' convolutions keep their
  batch norm's input, not the ReLU output, for the backward pass.
- `atrous.AtrousConv2D` / `atrous.dilated_conv2d`: atrous convolutions
  (ResNet units past the output stride, ASPP) run with native dilation and a
  kernel gradient of matmuls, instead of SpaceToBatchND around a convolution.
  The stride-1 units pad inside their convolution (no padded copy is kept).
- `subpixel.SubpixelConv2DTranspose`: the 3x3 stride-2 transposed
  convolutions as four phase convolutions.
- `decoder_tail`: the linear end of the "deconv1x" decoder composed into two
  convolutions (`composed`), borders from the layers on thin strips.

Weights trained with one set load into the other (checkpoints by layer name
or position: `model-weights.h5`, `.h5`, `.keras`, TF checkpoints). Keras'
`.weights.h5` format names layers by their class: `model.load_weights` takes
such a file only from the same set; `zoo.deeplabv3plus(weights=...)` takes it
from either.

Example:
    >>> kernels, reason = default_kernels()
    >>> model = zoo.deeplabv3plus(input_shape=(64, 96, 16), kernels=kernels)
"""

KERNELS = ("reference", "cpu")

# The fast kernels that XLA cannot compile, with the reason: none (each is
# compiled forward and backward by tests/test_zoo_kernels.py).
NOT_XLA_COMPILABLE = {"reference": {}, "cpu": {}}


def check_kernels(kernels):
    """Returns `kernels` if it is a known kernel set, else raises ValueError."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))} or None "
                         f"(chosen by device); received {kernels!r}.")
    return kernels


def default_kernels():
    """The kernel set for this machine's devices, and why.

    "cpu" when TensorFlow sees no GPU (`tf.config.list_physical_devices("GPU")`
    is empty): the fast kernels were measured faster there. "reference" when
    it sees one: cuDNN runs the standard layers, and the CPU kernels were never
    measured on a GPU.

    Returns:
        (kernels, reason): "cpu" or "reference", and a sentence for the log.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "reference", (f"{len(gpus)} GPU(s) visible: the standard layers (the CPU "
                             "kernels were measured on CPUs only)")
    return "cpu", "no GPU visible: the CPU kernels, measured faster on CPU"


def resolve_kernels(kernels):
    """`kernels`, or `default_kernels()`'s choice for None."""
    return default_kernels()[0] if kernels is None else check_kernels(kernels)


def check_jit(kernels):
    """Raises ValueError if a model with `kernels` cannot be XLA-compiled.

    Call before compiling with `jit_compile=True`. Returns the kernel set
    (`default_kernels()`'s choice for None).
    """
    kernels = resolve_kernels(kernels)
    for kernel, reason in NOT_XLA_COMPILABLE[kernels].items():
        raise ValueError(f"kernels={kernels!r}: {kernel} cannot be XLA-compiled ({reason}); "
                         "use kernels='reference' with jit_compile.")
    return kernels


def choose_kernels(kernels=None, jit_compile=False, given="kernels="):
    """A command's kernel set and why: `kernels` as given (the reason is `given`, e.g. the
    flag's name), else `default_kernels()`'s; with `jit_compile`, checked by `check_jit`.

    Raises:
        ValueError: an unknown kernel set, or one that cannot be XLA-compiled.
    """
    chosen = (check_kernels(kernels), given) if kernels is not None else default_kernels()
    if jit_compile:
        check_jit(chosen[0])
    return chosen
