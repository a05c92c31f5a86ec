"""Argument checks and finishing steps shared by the zoo builders."""

import os

import tensorflow as tf


def check_input_shape(input_shape, multiple, allow_none=True, name="input_shape"):
    """Returns `input_shape` as a tuple (H, W, C) or raises ValueError.

    H and W must be divisible by `multiple` (the network's total downsampling)
    or None when `allow_none`; C must be a positive int.
    """
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{name} must be (height, width, channels); received {input_shape!r}."
        )
    *spatial, channels = shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"{name} needs a positive int channel count; received {input_shape!r}."
        )
    for size in spatial:
        if size is None and allow_none:
            continue
        if not isinstance(size, int) or size < multiple or size % multiple:
            expected = f"a multiple of {multiple}" + (" or None" if allow_none else "")
            raise ValueError(
                f"{name} height and width must each be {expected}; received {input_shape!r}."
            )
    return shape


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)!r}; received {value!r}.")
    return value


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {value!r}.")
    return value


def check_weights(weights):
    if weights is not None and not (
        os.path.exists(weights) or os.path.exists(f"{weights}.index")
    ):
        raise ValueError(
            f"weights must be None or the path of a checkpoint; {weights!r} does not exist."
        )
    return weights


def float32_logits(x, name="logits"):
    """Final identity layer in float32, so mixed-precision models give float32 logits."""
    return tf.keras.layers.Activation("linear", dtype="float32", name=name)(x)


def load_weights(model, weights):
    """Loads `weights` (a `.weights.h5`, `.h5`, `.keras` or TF checkpoint path)."""
    if weights is None:
        return model
    try:
        if str(weights).endswith(".keras"):
            saved = tf.keras.models.load_model(weights, compile=False)
            model.set_weights(saved.get_weights())
        else:
            model.load_weights(weights)
    except (OSError, ValueError, tf.errors.OpError) as e:
        # h5py's and Keras' own messages name neither the file nor what would fit.
        reason = " ".join(str(e).split())
        raise ValueError(f"weights={str(weights)!r} cannot be loaded into model "
                         f"{model.name!r}: {reason}; expected weights saved from the same "
                         "architecture (model.save_weights, a .keras file or a TF "
                         "checkpoint)") from e
    return model
