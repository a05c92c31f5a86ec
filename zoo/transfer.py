"""Starting a model from another model's weights (fine-tuning).

Weights are matched by layer name, then by shape. Layers whose shapes differ
(a new head for another number of classes) are skipped and reported by name.
A layer made of sublayers (DeepLabv3+'s `decoder_tail`) is matched weight by
weight when it does not match as a whole, so that a new head inside it does
not cost the other sublayers' weights.

The convolutions that read the model's input (found from the model graph:
every layer fed by `model.inputs`, directly or through layers without
weights that keep the channels, such as padding; inside a layer with
sublayers, its 4-D convolution kernels over that many channels) are adapted
when the input channels differ (a stem trained on 3-channel RGB, or on
another selection of climate variables), instead of skipped. DeepLabv3+
has two: the ResNet stem and the full-resolution input skip in
`decoder_tail`. With the channels' names of both models
(`source_channels`, `target_channels`, e.g. `data.CHANNELS` names), the
filter slice of every channel both have is copied, in the new order, and
only the channels the source lacks are new. Every new channel gets the
same filter, the "mean filter" of the source channels that are not carried
over (the dropped ones):

    kernel_new[..., c, :] = sum_over_dropped_d(kernel_old[..., d, :]) / N_new

for each of the N_new new channels c. Without names no channel is carried
over, every old channel counts as dropped and every new one is new, which
is the rule for ImageNet models on multispectral images:

    kernel_new[..., c, :] = mean_over_c'(kernel_old[..., c', :]) * C_old / C_new

Either way the sum of the filters over input channels is the old one's (when
there is a new channel to take up the dropped ones' share), so an input
whose channels are all alike gets the old response. A channel added to a
full set (nothing dropped) starts with a zero filter: the model then
computes exactly what the source did on the channels it knew, and learns the
new channel's filter from there.

A layer that reads the input only among other maps (after a concatenation)
is not adapted; with names that reorder the channels it is skipped rather
than loaded with its input filters in the wrong places.

Nothing is executed when loading: the sources are weights files (`.h5`,
tf-keras layout) and TF checkpoints, which hold only tensors.
"""

import os
import re
import zipfile

import h5py
import numpy as np
import tensorflow as tf

from zoo.catalog import BACKBONE_PATTERNS


def adapt_input_channels(kernel, channels, source_channels=None, target_channels=None):
    """Adapts a conv kernel (kh, kw, C_old, out) to `channels` input channels.

    Args:
        kernel: the source's kernel, (kh, kw, C_old, out).
        channels: the number of input channels wanted, C_new.
        source_channels: names of the C_old channels the kernel was trained
            on, in order. Defaults to `None`.
        target_channels: names of the C_new channels wanted, in order.
            Defaults to `None`. With both names, channels found in both
            (case-insensitive) keep their filter; without, none does.

    Returns:
        The (kh, kw, channels, out) kernel of the module's rule.

    Raises:
        ValueError: a kernel that is not 4-D, or names that do not fit the
            kernel or `channels` (see `load_matching_weights`).

    Example:
        >>> adapt_input_channels(kernel, 3, ["TMQ", "U850", "V850", "PSL"],
        ...                      ["U850", "PSL", "TS"])  # TS: sum of TMQ's and V850's
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-D conv kernel, got shape {kernel.shape}")
    sources, _ = _match_channels(kernel.shape[2], channels, source_channels, target_channels)
    new = [c for c, old in enumerate(sources) if old is None]
    carried = {old for old in sources if old is not None}
    dropped = [old for old in range(kernel.shape[2]) if old not in carried]
    out = np.empty(kernel.shape[:2] + (channels,) + kernel.shape[3:], kernel.dtype)
    if new:
        fill = kernel[:, :, dropped].sum(axis=2) / len(new)  # zeros if nothing was dropped
    for c, old in enumerate(sources):
        out[:, :, c] = fill if old is None else kernel[:, :, old]
    return out


def _match_channels(old_count, new_count, source_channels, target_channels):
    """For each new channel, the index of the old channel of the same name, or None.

    Returns:
        `(sources, names)`: the list of old indices (None for a new channel),
        and the new channels' names (their indices without names).
    """
    if (source_channels is None) != (target_channels is None):
        given = "source_channels" if target_channels is None else "target_channels"
        raise ValueError(f"source_channels and target_channels go together; received only "
                         f"{given}")
    if source_channels is None:
        return [None] * new_count, list(range(new_count))
    for names, count, which, what in (
            (source_channels, old_count, "source_channels", "the checkpoint's kernel reads"),
            (target_channels, new_count, "target_channels", "the model's input has")):
        if len(names) != count:
            raise ValueError(f"{which} names {len(names)} channels "
                             f"({', '.join(map(str, names))}), but {what} {count}")
        upper = [str(name).upper() for name in names]
        if len(set(upper)) != len(upper):
            raise ValueError(f"{which} repeats a channel: {', '.join(map(str, names))}")
    old_index = {str(name).upper(): i for i, name in enumerate(source_channels)}
    return [old_index.get(str(name).upper()) for name in target_channels], list(target_channels)


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
    """The weights to load for `path`: a checkpoint directory's weights file, or `path`."""
    from callbacks.checkpoint import WEIGHTS  # the checkpoint layout's one home

    if os.path.isdir(path):
        candidate = os.path.join(path, WEIGHTS)
        if os.path.isfile(candidate):
            return candidate
        raise ValueError(f"{path} is a directory without {WEIGHTS} (not a climseg "
                         "checkpoint)")
    if not os.path.exists(path) and not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"checkpoint {path} does not exist")
    return path


def _is_tf_checkpoint(path):
    """Whether `path` is a TF checkpoint prefix (else a tf-keras HDF5 weights file).

    Decided by what is there, not by the name: anything else (a `.keras`
    archive, an empty file) raises ValueError naming `path` and what it is.
    """
    if path.endswith(".h5") or (os.path.isfile(path) and h5py.is_hdf5(path)):
        return False
    if tf.io.gfile.exists(path + ".index"):
        return True
    if zipfile.is_zipfile(path):
        found = "a zip archive (a Keras '.keras' model file?)"
    elif os.path.isfile(path) and os.path.getsize(path) == 0:
        found = "an empty file"
    else:
        found = "neither an HDF5 file nor a TF checkpoint prefix (no .index file beside it)"
    raise ValueError(f"{path} is {found}; expected a climseg checkpoint directory, a tf-keras "
                     "weights file written by model.save_weights('NAME.h5'), or a TF "
                     "checkpoint prefix of a tf-models-official backbone (NAME, with "
                     "NAME.index beside it)")


def load_matching_weights(model, path, modules="all", model_name=None, source_channels=None,
                          target_channels=None):
    """Loads the weights of `path` into `model` where names and shapes fit.

    The convolutions that read the model's input are adapted to its channels
    by the module's rule.

    Args:
        model: the model to initialise.
        path: a climseg checkpoint directory, a tf-keras `.h5` weights file, or
            a TF checkpoint prefix of a tf-models-official backbone (then
            `model` must have a layer holding a tfm backbone).
        modules: `"all"` or `"backbone"` (only the encoder's layers, as in
            `BACKBONE_PATTERNS`). Defaults to `"all"`.
        model_name: the zoo name of `model`, needed for `modules="backbone"`.
        source_channels: names of the input channels `path` was trained on,
            in order (a climseg checkpoint's `meta.json` "channel_names").
            Defaults to `None`.
        target_channels: names of `model`'s input channels, in order.
            Defaults to `None`. Give both or neither: with both, the filters
            of the channels both have are copied, also when only their order
            differs; without, every input channel gets the mean filter.

    Returns:
        A dict with lists `loaded`, `adapted` (input channels adapted) and
        `skipped` (`(layer, reason)` pairs), all layer names of `model`
        (`"layer/sublayer/kernel"` for a weight inside a layer with
        sublayers), and dicts `copied_channels` and `new_channels` from each
        `adapted` name to the input channels whose filters were copied and
        those initialised by the rule (names, or indices without names).

    Raises:
        ValueError: unreadable source, unknown `modules`, channel names that do
            not fit the checkpoint or the model, or nothing matched.
    """
    if modules not in ("all", "backbone"):
        raise ValueError(f"modules must be 'all' or 'backbone', got {modules!r}")
    if (source_channels is None) != (target_channels is None):
        _match_channels(0, 0, source_channels, target_channels)  # raises
    pattern = None
    if modules == "backbone":
        if model_name not in BACKBONE_PATTERNS:
            raise ValueError(f"no backbone definition for model {model_name!r}; "
                             f"known: {', '.join(sorted(BACKBONE_PATTERNS))}")
        pattern = re.compile(BACKBONE_PATTERNS[model_name])
    path = weights_file(path)
    if _is_tf_checkpoint(path):
        return _load_tfm_backbone(model, path)

    source = _read_h5_weights(path)
    readers = _input_readers(model)
    if target_channels is not None:
        for count in set(readers.values()) - {None}:
            _match_channels(0, count, [], target_channels)  # raises for a wrong count
    names = (source_channels, target_channels)
    report = {"loaded": [], "adapted": [], "skipped": [], "copied_channels": {},
              "new_channels": {}}
    for layer in model.layers:
        if not layer.weights or (pattern and not pattern.search(layer.name)):
            continue
        if layer.name not in source:
            report["skipped"].append((layer.name, "not in checkpoint"))
            continue
        if readers.get(layer.name) is not None:
            _load_input_reader(layer, source[layer.name], readers[layer.name], names, report)
            continue
        old, new = list(source[layer.name].values()), layer.get_weights()
        same_shapes = len(old) == len(new) and all(
            o.shape == n.shape for o, n in zip(old, new, strict=True))
        if same_shapes and layer.name in readers and _reorders(names):
            report["skipped"].append((layer.name, "reads the model's input among other maps, "
                                                  "whose channels are not matched by name"))
        elif same_shapes:
            layer.set_weights(old)
            report["loaded"].append(layer.name)
        elif _load_nested_by_weight(layer, source[layer.name], report):
            continue
        elif len(old) != len(new):
            report["skipped"].append((layer.name, f"{len(old)} weights, expected {len(new)}"))
        else:
            shapes = ", ".join(str(tuple(o.shape)) for o in old)
            want = ", ".join(str(tuple(n.shape)) for n in new)
            why = f"shapes {shapes} vs {want}"
            if _differ_in_input_channels(old[0], new[0]):
                why += (" (the model's input among other maps: not adapted)"
                        if layer.name in readers else
                        " (other input channels, but the layer does not read the model's input)")
            report["skipped"].append((layer.name, why))
    if not report["loaded"] and not report["adapted"]:
        raise ValueError(f"no layer of {path} matches model {model.name!r} by name and "
                         "shape")
    return report


def _input_readers(model):
    """The layers of `model` that read its input: {layer name: input channels}.

    Found from the graph: the layers fed by `model.inputs`, directly or
    through layers without weights that keep the number of channels
    (padding, subsampling, casts, dropout). A layer that reads the input
    only mixed with other maps (after a concatenation) maps to None.
    """
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if not nodes_by_depth or not model.inputs:
        return {}
    channels = {id(tensor): tensor.shape[-1] for tensor in model.inputs}
    readers = {}
    # Deepest first: the input layers' nodes, then the layers they feed.
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            inputs = [t for t in tf.nest.flatten(node.keras_inputs) if id(t) in channels]
            if not inputs:
                continue
            counts = [channels[id(t)] for t in inputs]
            count = next((c for c in counts if c is not None), None)
            if node.layer.weights:
                readers[node.layer.name] = count
                continue
            whole = len(tf.nest.flatten(node.keras_inputs)) == 1
            for output in tf.nest.flatten(node.outputs):
                keeps = whole and output.shape.rank and output.shape[-1] == count
                channels[id(output)] = count if keeps else None
    return readers


def _reorders(names):
    """Whether (source_channels, target_channels) differ (None: not known)."""
    return names[0] is not None and (
        [str(n).upper() for n in names[0]] != [str(n).upper() for n in names[1]])


def _differ_in_input_channels(old, new):
    """Whether conv kernels `old` and `new` differ in their input channels only."""
    return (old.ndim == 4 and len(new.shape) == 4 and old.shape[2] != new.shape[2]
            and tuple(old.shape[:2]) + tuple(old.shape[3:])
            == tuple(new.shape[:2]) + tuple(new.shape[3:]))


def _input_kernels(layer, channels):
    """Ids of the variables of `layer` that are kernels of convolutions over its input.

    For a layer without sublayers, its kernel. Inside a layer with sublayers
    (which reads other tensors too) the graph does not tell which sublayer
    reads the input: every 4-D kernel over `channels` channels of a
    (not transposed) convolution is taken to.
    """
    convs = list(layer._flatten_layers(include_self=False, recursive=True)) or [layer]
    # A transposed convolution's kernel is (kh, kw, out, in): axis 2 is not its input.
    kernels = [getattr(conv, "kernel", None) for conv in convs
               if not isinstance(conv, tf.keras.layers.Conv2DTranspose)]
    return {id(kernel) for kernel in kernels
            if isinstance(kernel, tf.Variable) and kernel.shape.rank == 4
            and kernel.shape[2] == channels}


def _load_input_reader(layer, old, channels, names, report):
    """Loads a layer that reads the model's input, adapting its input kernels."""
    nested = bool(list(layer._flatten_layers(include_self=False, recursive=False)))
    variables, arrays = layer.weights, list(old.values())
    if len(arrays) != len(variables):
        mismatch = f"{len(arrays)} weights, expected {len(variables)}"
    else:
        mismatch = "shapes {} vs {}".format(*(", ".join(str(tuple(w.shape)) for w in weights)
                                              for weights in (arrays, variables)))
    if len(arrays) == len(variables) and all(
            tuple(a.shape) == tuple(v.shape) or _differ_in_input_channels(a, v)
            for a, v in zip(arrays, variables, strict=True)):
        pairs = list(zip(variables, arrays, strict=True))  # by position
    elif nested:
        by_key = {_weight_key(name, layer.name): array for name, array in old.items()}
        pairs = [(v, by_key.get(_weight_key(v.name, layer.name))) for v in variables]
    else:
        report["skipped"].append((layer.name, mismatch))
        return
    input_kernels = _input_kernels(layer, channels)
    reorder = _reorders(names)
    loaded, adapted, skipped = [], [], []
    for variable, array in pairs:
        key = _weight_key(variable.name, layer.name)
        label = f"{layer.name}/{key}" if nested else layer.name
        if array is None:
            skipped.append((label, "not in checkpoint"))
        elif id(variable) in input_kernels and (
                _differ_in_input_channels(array, variable) or reorder):
            adapted.append((variable, array, label))
        elif tuple(array.shape) == tuple(variable.shape):
            loaded.append((variable, array))
        else:
            skipped.append((label, f"shapes {tuple(array.shape)} vs {tuple(variable.shape)}"))
    if not nested and skipped:  # A layer without sublayers loads whole or not at all.
        report["skipped"].append((layer.name, mismatch))
        return
    kernels = [(variable, array, adapt_input_channels(array, variable.shape[2], *names), label)
               for variable, array, label in adapted]  # Raises before anything is assigned.
    for variable, array in loaded:
        variable.assign(array)
    for variable, array, kernel, label in kernels:
        variable.assign(kernel)
        sources, new_names = _match_channels(array.shape[2], kernel.shape[2], *names)
        report["adapted"].append(label)
        report["copied_channels"][label] = [
            name for name, old in zip(new_names, sources, strict=True) if old is not None]
        report["new_channels"][label] = [
            name for name, old in zip(new_names, sources, strict=True) if old is None]
    if not nested:
        if not kernels:
            report["loaded"].append(layer.name)
    elif len(loaded) == len(variables):
        report["loaded"].append(layer.name)
    elif loaded:
        report["loaded"].append(f"{layer.name} ({len(loaded)} of {len(variables)} weights)")
    report["skipped"].extend(skipped)


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
    return {"loaded": [backbone.name], "adapted": [], "skipped": [], "copied_channels": {},
            "new_channels": {}}

