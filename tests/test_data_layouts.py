"""data.layouts: reading DeepCAM, SC18 and ClimateNet files, and rejecting bad ones."""

import h5netcdf
import h5py
import numpy as np
import pytest

from data.errors import DataFileError
from data.layouts import (
    CHANNELS,
    aligned_empty,
    channel_indices,
    dataset_grid,
    inspect_file,
    read_sample,
)

H, W = 16, 24


def _sample(seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(H, W, 16)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, H, W)).astype(np.int32)
    return data, labels


def _write_deepcam(path, data, labels, chunked=False):
    with h5py.File(path, "w") as f:
        f.create_dataset("climate/data", data=data, chunks=(4, 4, 16) if chunked else None)
        f["climate/labels_0"] = labels[0]
        f["climate/labels_1"] = labels[1]
    return path


def _write_sc18(path, data, labels):
    with h5py.File(path, "w") as f:
        f["climate/data"] = np.moveaxis(data, -1, 0)
        f["climate/labels"] = labels.astype(np.float32)  # SC18 stored labels as floats.
    return path


def _write_climatenet(path, data, labels):
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"time": 1, "lat": H, "lon": W}
        for i, name in enumerate(CHANNELS):
            var = f.create_variable(name, ("time", "lat", "lon"), np.float32)
            var[...] = data[None, ..., i]
        f.create_variable("LABELS", ("lat", "lon"), np.int64)[...] = labels[0]
    return path


@pytest.mark.parametrize("chunked", [False, True])
def test_deepcam_layout_reads_fields_and_both_label_sets(tmp_path, chunked):
    data, labels = _sample()
    path = _write_deepcam(tmp_path / "a.h5", data, labels, chunked)
    x, y = read_sample(path)
    np.testing.assert_array_equal(x, data)
    np.testing.assert_array_equal(y, labels[0])
    assert y.dtype == np.int32 and x.dtype == np.float32
    _, y1 = read_sample(path, label_set="labels_1")
    np.testing.assert_array_equal(y1, labels[1])
    assert inspect_file(path) == ("deepcam", H, W, ("labels_0", "labels_1"), 1)
    if not chunked:  # Read with plain file reads into 64-byte aligned memory.
        assert x.ctypes.data % 64 == 0


def test_aligned_empty_is_aligned_and_sized_and_tensorflow_takes_it_without_a_copy():
    import tensorflow as tf

    for shape, dtype in (((5, 7, 3), np.float32), ((13,), np.int8), ((4, 4), np.float64)):
        array = aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.ctypes.data % 64 == 0
        assert array.flags.c_contiguous and array.flags.writeable
    # In a graph (as tf.data runs it), tf.numpy_function hands an aligned array to
    # TensorFlow as it is: a later write to the array shows in the tensor. An array
    # 4 bytes off the alignment (numpy's own start 16 bytes into a page) is copied.
    def through_tensorflow(array):
        return tf.function(lambda: tf.numpy_function(lambda: array, [], tf.float32))()

    seen = {}
    for name, array in (("aligned", aligned_empty((64, 64), np.float32)),
                        ("misaligned",
                         aligned_empty((64 * 64 + 1,), np.float32)[1:].reshape(64, 64))):
        array[...] = 1.0
        tensor = through_tensorflow(array)
        array[0, 0] = 5.0
        seen[name] = float(tensor[0, 0])
    assert seen == {"aligned": 5.0, "misaligned": 1.0}


def test_sc18_layout_is_returned_channels_last(tmp_path):
    data, labels = _sample(1)
    path = _write_sc18(tmp_path / "b.h5", data, labels)
    x, y = read_sample(path, channels="PSL,TMQ", label_set="labels_1")
    np.testing.assert_array_equal(x, data[..., [7, 0]])
    np.testing.assert_array_equal(y, labels[1])
    assert inspect_file(path).layout == "sc18"


def test_climatenet_netcdf_reads_variables_by_name(tmp_path):
    data, labels = _sample(2)
    path = _write_climatenet(tmp_path / "c.nc", data, labels)
    x, y = read_sample(path, channels=[10, "U850"])
    np.testing.assert_array_equal(x, data[..., [10, 1]])
    np.testing.assert_array_equal(y, labels[0])
    with pytest.raises(DataFileError, match="has no label set labels_1; it has labels_0"):
        read_sample(path, label_set="labels_1")


def test_random_label_set_draws_both_sets_reproducibly(tmp_path):
    data, labels = _sample(3)
    path = _write_deepcam(tmp_path / "a.h5", data, labels)
    rng = np.random.default_rng(5)
    draws = [int(np.array_equal(read_sample(path, label_set="random", rng=rng)[1], labels[1]))
             for _ in range(20)]
    expected = np.random.default_rng(5).integers(2, size=20)
    assert draws == expected.tolist()


def test_channel_indices_by_name_index_and_string():
    assert channel_indices(None) == list(range(16))
    assert channel_indices("tmq, 7,ZBOT") == [0, 7, 15]
    assert channel_indices(["V850", 3]) == [2, 3]
    with pytest.raises(ValueError, match=r"unknown channel 'T850'.*names TMQ, U850"):
        channel_indices("TMQ,T850")
    with pytest.raises(ValueError, match="channel index 16 .* out of range; expected 0..15"):
        channel_indices([16])
    with pytest.raises(ValueError, match="channel PSL appears twice"):
        channel_indices("PSL,7")


def test_unknown_layout_names_file_datasets_and_expected_layouts(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["climate/data"] = np.zeros((H, W, 8), np.float32)
        f["climate/labels_0"] = np.zeros((H, W), np.int32)
    with pytest.raises(DataFileError) as err:
        read_sample(path)
    text = str(err.value)
    assert text.startswith(f"{path}: is in no known layout")
    assert "climate/data (16, 24, 8) float32" in text
    assert "DeepCAM (climate/data (H, W, 16)" in text and "SC18" in text and "ClimateNet" in text


def test_truncated_file_is_reported_with_its_name(tmp_path):
    data, labels = _sample()
    path = _write_deepcam(tmp_path / "t.h5", data, labels)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match=rf"^{path}: (cannot be opened|.*truncated)"):
        read_sample(path)


def test_not_hdf5_and_missing_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an HDF5 file at all" * 10)
    with pytest.raises(DataFileError, match=rf"^{junk}: cannot be opened as HDF5"):
        read_sample(junk)
    with pytest.raises(DataFileError, match="no such file"):
        read_sample(tmp_path / "nope.h5")


def test_nan_and_inf_are_reported_with_channel_names(tmp_path):
    data, labels = _sample()
    data[3, 4, 7] = np.nan
    data[0, 0, 0] = np.inf
    path = _write_deepcam(tmp_path / "n.h5", data, labels)
    with pytest.raises(DataFileError, match=rf"^{path}: data contain 2 NaN/Inf values "
                                            r"\(channels TMQ, PSL\)"):
        read_sample(path)
    x, _ = read_sample(path, validate=False)
    assert np.isnan(x[3, 4, 7])


def test_labels_outside_class_range(tmp_path):
    data, labels = _sample()
    labels[0, 2, 2] = 5
    labels[0, 1, 1] = -1
    path = _write_deepcam(tmp_path / "l.h5", data, labels)
    with pytest.raises(DataFileError, match=rf"^{path}: labels_0 contain values outside the "
                                            r"class range 0..2: \[-1, 5\]"):
        read_sample(path)


def test_file_of_another_grid_size(tmp_path):
    data, labels = _sample()
    path = _write_deepcam(tmp_path / "s.h5", data, labels)
    with pytest.raises(DataFileError, match=rf"^{path}: grid is 16x24, but the other files' "
                                            "is 32x48"):
        read_sample(path, expected_shape=(32, 48))


def test_dataset_grid_skips_bad_files_when_asked(tmp_path):
    from data.errors import BadFileLog

    junk = tmp_path / "a.h5"
    junk.write_bytes(b"junk")
    good = _write_deepcam(tmp_path / "b.h5", *_sample())
    with pytest.raises(DataFileError, match="a.h5"):
        dataset_grid([junk, good])
    bad = BadFileLog()
    assert dataset_grid([junk, good], skip_bad_files=True, bad_files=bad) == (H, W)
    assert [path for path, _ in bad.items()] == [str(junk)]
    assert bad.report().startswith("skipped 1 bad file:\n  ")


def test_the_grid_of_a_data_set_is_that_of_most_of_its_files(tmp_path):
    from data.errors import BadFileLog

    fields, labels = _sample()
    odd = _write_deepcam(tmp_path / "a-small.h5", fields[:-2], labels[:, :-2])  # sorts first
    good = [_write_deepcam(tmp_path / f"b{i}.h5", fields, labels) for i in range(3)]
    with pytest.raises(DataFileError) as err:
        dataset_grid([odd, *good])
    assert str(err.value) == (f"{odd}: grid is {H - 2}x{W}, but the other files' is {H}x{W} "
                              "(3 of 4 files)")
    bad = BadFileLog()
    assert dataset_grid([odd, *good], skip_bad_files=True, bad_files=bad) == (H, W)
    assert [path for path, _ in bad.items()] == [str(odd)]


def test_files_without_labels_read_only_when_labels_are_not_required(tmp_path):
    data, _ = _sample()
    deepcam, sc18 = tmp_path / "d.h5", tmp_path / "s.h5"
    with h5py.File(deepcam, "w") as f:
        f["climate/data"] = data
    with h5py.File(sc18, "w") as f:
        f["climate/data"] = np.moveaxis(data, -1, 0)
    for path, layout in ((deepcam, "deepcam"), (sc18, "sc18")):
        assert inspect_file(path) == (layout, H, W, (), 1)
        with pytest.raises(DataFileError, match=rf"^{path}: has no labels; expected DeepCAM"):
            read_sample(path)
        x, y = read_sample(path, channels="TMQ", labels_required=False)
        np.testing.assert_array_equal(x[..., 0], data[..., 0])
        assert y is None
    labelled = _write_deepcam(tmp_path / "l.h5", data, _sample()[1])
    assert read_sample(labelled, labels_required=False)[1] is not None
