"""Starting a model from another model's weights (fine-tuning).

Weights are matched by layer name, then by shape. Layers whose shapes differ
(a new head for another number of classes) are skipped and reported by name.
A layer made of sublayers (DeepLabv3+'s `decoder_tail`) is matched weight by
weight when it does not match as a whole, so that a new head inside it does
not cost the other sublayers' weights.
A convolution that differs only in its number of input channels (a stem
trained on 3-channel RGB, or on another selection of climate variables) is
adapted instead of skipped, by this rule:

    kernel_new[..., c, :] = mean_over_c'(kernel_old[..., c', :]) * C_old / C_new

for every new input channel c: each new channel gets the average filter, and
the scale keeps the response to an input whose channels are all alike equal
to the old one's. (The same rule as used for ImageNet models on
multispectral images.)

Nothing is executed when loading: the sources are weights files (`.h5`,
tf-keras layout) and TF checkpoints, which hold only tensors.
"""

import os
import re

import h5py
import numpy as np
import tensorflow as tf

# Layers that belong to the encoder ("backbone") of each zoo model, by name.
BACKBONE_PATTERNS = {
    "deeplabv3plus": r"^(conv[1-5]_|pool1_|post_)",
    "tiramisu": r"^(stem|down\d+)_",
}
# deeplabv3plus_tfm is one Keras layer around tf-models-official's model: its
# encoder loads from a tfm backbone checkpoint (see `load_matching_weights`).


def adapt_input_channels(kernel, channels):
    """Adapts a conv kernel (kh, kw, C_old, out) to `channels` input channels.

    Returns:
        The (kh, kw, channels, out) kernel of the module's rule.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-D conv kernel, got shape {kernel.shape}")
    mean = kernel.mean(axis=2, keepdims=True)
    return np.repeat(mean, channels, axis=2) * (kernel.shape[2] / channels)


def _read_h5_weights(path):
    """Returns {layer name: {weight name: array}} (in file order) from a tf-keras `.h5`."""
    out = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in root.attrs.get("layer_names", [])]
            if not names:
                raise ValueError("no 'layer_names' attribute: not a by-name tf-keras weights "
                                 "file (write one with model.save_weights('name.h5'); "
                                 "'.weights.h5' files are matched by position, not name)")
            for name in names:
                group = root[name]
                weight_names = [w.decode() if isinstance(w, bytes) else w
                                for w in group.attrs.get("weight_names", [])]
                out[name] = {w: np.asarray(group[w]) for w in weight_names}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"cannot read weights from {path}: {e}") from e
    return out


def weights_file(path):
    """The weights to load for `path`: a checkpoint directory's `model-weights.h5`, or `path`."""
    if os.path.isdir(path):
        candidate = os.path.join(path, "model-weights.h5")
        if os.path.isfile(candidate):
            return candidate
        raise ValueError(f"{path} is a directory without model-weights.h5 (not a climseg "
                         "checkpoint)")
    if not os.path.exists(path) and not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"checkpoint {path} does not exist")
    return path


def load_matching_weights(model, path, modules="all", model_name=None):
    """Loads the weights of `path` into `model` where names and shapes fit.

    Args:
        model: the model to initialise.
        path: a climseg checkpoint directory, a tf-keras `.h5` weights file, or
            a TF checkpoint prefix of a tf-models-official backbone (then
            `model` must have a layer holding a tfm backbone).
        modules: `"all"` or `"backbone"` (only the encoder's layers, as in
            `BACKBONE_PATTERNS`). Defaults to `"all"`.
        model_name: the zoo name of `model`, needed for `modules="backbone"`.

    Returns:
        A dict with lists `loaded`, `adapted` (input channels adapted) and
        `skipped` (`(layer, reason)` pairs), all layer names of `model`.

    Raises:
        ValueError: unreadable source, unknown `modules`, or nothing matched.
    """
    if modules not in ("all", "backbone"):
        raise ValueError(f"modules must be 'all' or 'backbone', got {modules!r}")
    pattern = None
    if modules == "backbone":
        if model_name not in BACKBONE_PATTERNS:
            raise ValueError(f"no backbone definition for model {model_name!r}; "
                             f"known: {', '.join(sorted(BACKBONE_PATTERNS))}")
        pattern = re.compile(BACKBONE_PATTERNS[model_name])
    path = weights_file(path)
    if not path.endswith(".h5"):
        return _load_tfm_backbone(model, path)

    source = _read_h5_weights(path)
    report = {"loaded": [], "adapted": [], "skipped": []}
    for layer in model.layers:
        if not layer.weights or (pattern and not pattern.search(layer.name)):
            continue
        if layer.name not in source:
            report["skipped"].append((layer.name, "not in checkpoint"))
            continue
        old, new = list(source[layer.name].values()), layer.get_weights()
        same_shapes = len(old) == len(new) and all(
            o.shape == n.shape for o, n in zip(old, new, strict=True))
        if not same_shapes and _load_nested_by_weight(layer, source[layer.name], report):
            continue
        if len(old) != len(new):
            report["skipped"].append((layer.name, f"{len(old)} weights, expected {len(new)}"))
            continue
        if same_shapes:
            layer.set_weights(old)
            report["loaded"].append(layer.name)
        elif (old[0].ndim == 4 and old[0].shape[:2] + old[0].shape[3:]
              == new[0].shape[:2] + new[0].shape[3:]
              and all(o.shape == n.shape for o, n in zip(old[1:], new[1:], strict=True))):
            layer.set_weights([adapt_input_channels(old[0], new[0].shape[2]), *old[1:]])
            report["adapted"].append(layer.name)
        else:
            shapes = ", ".join(str(tuple(o.shape)) for o in old)
            want = ", ".join(str(tuple(n.shape)) for n in new)
            report["skipped"].append((layer.name, f"shapes {shapes} vs {want}"))
    if not report["loaded"] and not report["adapted"]:
        raise ValueError(f"no layer of {path} matches model {model.name!r} by name and "
                         "shape")
    return report


def _weight_key(name, layer_name):
    """"decoder_tail/decoder_logits/kernel:0" -> "decoder_logits/kernel"."""
    name = name.rsplit(":", 1)[0]
    return name[len(layer_name) + 1:] if name.startswith(layer_name + "/") else name


def _load_nested_by_weight(layer, old, report):
    """Loads the weights of a layer with sublayers one by one, by name and shape.

    Returns False (nothing done) for a layer without sublayers or when no
    weight matches.
    """
    if not list(layer._flatten_layers(include_self=False, recursive=False)):
        return False
    old = {_weight_key(name, layer.name): array for name, array in old.items()}
    matched, skipped = [], []
    for variable in layer.weights:
        key = _weight_key(variable.name, layer.name)
        if key not in old:
            skipped.append((f"{layer.name}/{key}", "not in checkpoint"))
        elif tuple(old[key].shape) != tuple(variable.shape):
            skipped.append((f"{layer.name}/{key}",
                            f"shapes {tuple(old[key].shape)} vs {tuple(variable.shape)}"))
        else:
            matched.append((variable, old[key]))
    if not matched:
        return False
    for variable, array in matched:
        variable.assign(array)
    report["loaded"].append(f"{layer.name} ({len(matched)} of {len(layer.weights)} weights)")
    report["skipped"].extend(skipped)
    return True


def set_backbone_trainable(model, model_name, trainable):
    """Freezes (or unfreezes) the encoder layers of a zoo model, as in `BACKBONE_PATTERNS`.

    Recompile the model afterwards for the change to take effect in `fit`.

    Returns:
        The names of the layers changed.
    """
    if model_name not in BACKBONE_PATTERNS:
        raise ValueError(f"no backbone definition for model {model_name!r}; "
                         f"known: {', '.join(sorted(BACKBONE_PATTERNS))}")
    pattern = re.compile(BACKBONE_PATTERNS[model_name])
    changed = [layer.name for layer in model.layers if pattern.search(layer.name)]
    for layer in model.layers:
        if layer.name in changed:
            layer.trainable = trainable
    return changed


def _load_tfm_backbone(model, prefix):
    """Restores a tf-models-official backbone checkpoint into `model`'s backbone."""
    backbones = [module for module in model.submodules  # every tracked layer, nested too
                 if type(module).__module__.startswith("official.vision.modeling.backbones")]
    if not backbones:
        raise ValueError(f"{prefix} is a TF checkpoint, which is loaded as a "
                         "tf-models-official backbone, but the model has no such backbone "
                         "(use --model deeplabv3plus_tfm, or a climseg checkpoint)")
    backbone = backbones[0]
    try:
        status = tf.train.Checkpoint(backbone=backbone).read(prefix).expect_partial()
        status.assert_existing_objects_matched()
        status.assert_nontrivial_match()  # a checkpoint of something else matches nothing
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise ValueError(f"cannot restore a backbone from {prefix}: "
                         f"{str(e).splitlines()[0]}") from e
    return {"loaded": [backbone.name], "adapted": [], "skipped": []}

