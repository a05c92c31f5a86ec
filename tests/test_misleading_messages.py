"""Inputs that used to get a misleading message, or none: each named, with what was expected."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

import data
import zoo
from zoo.transfer import load_matching_weights

TINY = dict(input_shape=(32, 48, 4), num_classes=3, blocks=[1, 1, 2], growth_rate=4,
            initial_filters=8, kernel_size=3, dropout=0)


def _tiny(**kwargs):
    return zoo.get_model("tiramisu", **{**TINY, **kwargs})


def _keras_archive(path):
    _tiny().save(path)  # a real Keras model archive (a zip)
    return path


def _other_model_weights(path):
    _tiny(initial_filters=16).save_weights(path)  # the same layer names, other shapes
    return path


def _truncated_weights(path):
    _tiny().save_weights(path)
    with open(path, "r+b") as f:
        f.truncate(1000)
    return path


def _png(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not weights")
    return path


def _empty(path):
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make, name, message", [
    (_truncated_weights, "w.h5", "weights='{p}' cannot be loaded into model 'tiramisu': Unable "
                                 "to synchronously open file (truncated file: eof = 1000"),
    (_empty, "w.h5", "weights='{p}' cannot be loaded into model 'tiramisu': Unable to "
                     "synchronously open file (file signature not found); expected weights "
                     "saved from the same architecture"),
    (_other_model_weights, "w.h5", "weights='{p}' cannot be loaded into model 'tiramisu': "
                                   "Cannot assign value to variable"),
])
def test_builder_weights_that_do_not_load_name_the_file(tmp_path, make, name, message):
    path = make(tmp_path / name)
    with pytest.raises(ValueError) as error:
        _tiny(weights=str(path))
    assert str(error.value).startswith(message.format(p=path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("make, name, found", [
    (_keras_archive, "model.keras", "a zip archive (a Keras '.keras' model file?)"),
    (_empty, "weights", "an empty file"),
    (_png, "weights.bin",
     "neither an HDF5 file nor a TF checkpoint prefix (no .index file beside it)"),
])
def test_init_weights_of_an_unknown_kind_are_not_called_a_tf_checkpoint(tmp_path, make, name,
                                                                        found):
    path = make(tmp_path / name)
    with pytest.raises(ValueError) as error:
        load_matching_weights(_tiny(), str(path))
    assert str(error.value) == (
        f"{path} is {found}; expected a climseg checkpoint directory, a tf-keras weights file "
        "written by model.save_weights('NAME.h5'), or a TF checkpoint prefix of a "
        "tf-models-official backbone (NAME, with NAME.index beside it)")
    assert "tf-models-official backbone, but" not in str(error.value)


def test_hdf5_weights_under_another_name_load_by_content(tmp_path):
    source = _tiny()
    source.save_weights(tmp_path / "w.h5")
    shutil.copy(tmp_path / "w.h5", tmp_path / "w.weights")  # HDF5, whatever the name
    target = _tiny()
    report = load_matching_weights(target, str(tmp_path / "w.weights"))
    assert "stem_conv" in report["loaded"]
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channels, message", [
    ([1.5], "channel 1.5 in channels=[1.5] is a float; expected an integer index 0..15 or a "
            "name"),
    ([True], "channel True in channels=[True] is a bool; expected an integer index 0..15 or a "
             "name"),
    (["TMQ", 2.0], "channel 2.0 in channels=['TMQ', 2.0] is a float; expected an integer "
                   "index 0..15 or a name"),
    ([np.float32(3)], "channel np.float32(3.0) in channels=[np.float32(3.0)] is a float32; "
                      "expected an integer index"),
])
def test_read_sample_refuses_channels_that_are_not_indices_or_names(tmp_path, channels,
                                                                    message):
    data.generate(tmp_path, 1, 16, 24, seed=0)
    path = str(sorted(tmp_path.glob("data-*.h5"))[0])
    with pytest.raises(ValueError) as error:
        data.read_sample(path, channels=channels)
    assert str(error.value).startswith(message)
    # Integers of any kind, and names, are still channels.
    fields, _ = data.read_sample(path, channels=[np.int64(3), "PSL", 0])
    assert fields.shape == (16, 24, 3)
    tf.keras.backend.clear_session()
