"""The zoo's models by name, and their encoders, without importing TensorFlow.

`MODELS` maps a model's name to its builder; a builder's module (and with it
TensorFlow) is imported the first time the builder is looked up, so listing
the names (as `--help` does) costs nothing.
"""

import collections.abc
import importlib


class _Builders(collections.abc.Mapping):
    """`{name: builder}` whose builders are imported on first lookup."""

    def __init__(self, modules):
        self._modules = dict(modules)

    def __getitem__(self, name):
        return getattr(importlib.import_module(self._modules[name]), name)

    def __iter__(self):
        return iter(self._modules)

    def __len__(self):
        return len(self._modules)


MODELS = _Builders({
    "deeplabv3plus": "zoo.deeplabv3plus",
    "tiramisu": "zoo.tiramisu",
    "deeplabv3plus_tfm": "zoo.deeplabv3plus_tfm",
})

# Layers that belong to the encoder ("backbone") of each zoo model, by name.
BACKBONE_PATTERNS = {
    "deeplabv3plus": r"^(conv[1-5]_|pool1_|post_)",
    "tiramisu": r"^(stem|down\d+)_",
}
# deeplabv3plus_tfm is one Keras layer around tf-models-official's model: its
# encoder loads from a tfm backbone checkpoint (see `load_matching_weights`).
