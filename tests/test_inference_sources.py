"""inference.sources: the grid of an HDF5 sample's mask file (its lat/lon or indices)."""

import h5py
import numpy as np
import pytest

from data.errors import DataFileError
from data.layouts import sample_coordinates
from data.synthetic import synthesize_sample, write_sample
from inference.sources import open_source


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    data, labels = synthesize_sample(np.random.default_rng(0), 16, 24)
    path = tmp_path_factory.mktemp("samples") / "s.h5"
    write_sample(path, data, labels)
    return path, data


def _with(path, dst, **coords):
    with h5py.File(path) as src, h5py.File(dst, "w") as f:
        src.copy("climate", f)
        for name, values in coords.items():
            f[name] = values
    return dst


def test_a_sample_with_ascending_lat_lon_keeps_them(sample, tmp_path):
    path, data = sample
    lat, lon = np.linspace(-80.0, 80.0, 16, dtype=np.float32), np.arange(24) * 15.0
    geo = _with(path, tmp_path / "geo.h5", lat=lat, lon=lon)
    found = sample_coordinates(geo)
    np.testing.assert_array_equal(found[0], lat.astype(np.float64))
    assert found[0].dtype == np.float64 and list(found[1]) == list(lon)
    source = open_source(str(geo), [0, 1])
    assert source.grid == (16, 24) and source.num_times == 1
    np.testing.assert_array_equal(source.lat_values, lat)
    fields, _ = source.read(0)
    np.testing.assert_array_equal(fields, data[..., [0, 1]])


@pytest.mark.parametrize("coords", [
    {},  # DeepCAM's files hold none
    {"lat": np.linspace(80.0, -80.0, 16)},  # only one of them
    {"lat": np.linspace(80.0, -80.0, 16), "lon": np.arange(24) * 15.0},  # descending
    {"lat": np.linspace(-80.0, 80.0, 17), "lon": np.arange(24) * 15.0},  # not the grid's
], ids=["none", "lat-only", "descending", "other-size"])
def test_other_samples_get_index_dimensions(sample, tmp_path, coords):
    source = open_source(str(_with(sample[0], tmp_path / "s.h5", **coords)), [0])
    assert source.lat_values is None and source.lon_values is None


def test_an_unreadable_sample_is_named(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not HDF5")
    with pytest.raises(DataFileError, match="bad.h5"):
        sample_coordinates(tmp_path / "bad.h5")
