"""Predicted masks on disk (HDF5 and netCDF) and event maps as PNG."""

import h5netcdf
import h5py
import matplotlib.image
import numpy as np
import pytest

from data.maps import plot_events
from data.predictions import mask_path, write_mask


def _mask():
    mask = np.zeros((24, 36), np.uint8)
    mask[4:8, 5:9] = 1
    mask[12:14, 3:30] = 2
    return mask


def test_hdf5_mask_round_trip(tmp_path):
    src = tmp_path / "data-2106-01-01-00-1.h5"
    src.write_bytes(b"")  # only its name matters for HDF5 outputs
    path = write_mask(str(src), str(tmp_path), _mask(), attrs={"model": "tiramisu"})
    assert path == str(tmp_path / "data-2106-01-01-00-1.mask.h5")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["climate/prediction"][...], _mask())
        assert f.attrs["model"] == "tiramisu"
        assert f.attrs["classes"] == "0=background,1=tropical_cyclone,2=atmospheric_river"


def test_netcdf_input_gets_a_netcdf_mask_with_its_coordinates(tmp_path):
    src = tmp_path / "climatenet.nc"
    lat, lon = np.linspace(-90, 90, 24), np.linspace(0, 358, 36)
    with h5netcdf.File(src, "w") as f:
        f.dimensions = {"time": 1, "lat": 24, "lon": 36}
        f.create_variable("lat", ("lat",), "f8")[:] = lat
        f.create_variable("lon", ("lon",), "f8")[:] = lon
    path = write_mask(str(src), str(tmp_path / ".."), _mask())
    assert path.endswith("climatenet.mask.nc")
    with h5netcdf.File(path, "r") as f:
        np.testing.assert_array_equal(f["PREDICTED_LABELS"][0], _mask())
        np.testing.assert_array_equal(f["lat"][:], lat)
        np.testing.assert_array_equal(f["lon"][:], lon)


def test_bad_mask_shape_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(ValueError, match=r"has shape \(2, 24, 36\); expected \(H, W\)"):
        write_mask(str(tmp_path / "x.h5"), str(tmp_path), np.zeros((2, 24, 36)))
    assert not (tmp_path / "x.mask.h5").exists()
    assert mask_path("/a/b/c.nc4", "/o") == "/o/c.mask.nc"


def test_map_png_shows_prediction_and_truth(tmp_path):
    tmq = np.tile(np.linspace(0, 60, 24)[:, None], (1, 36)).astype(np.float32)
    one = plot_events(str(tmp_path / "one.png"), tmq, _mask())
    two = plot_events(str(tmp_path / "two.png"), tmq, _mask(), truth=_mask(), title="t")
    a, b = matplotlib.image.imread(one), matplotlib.image.imread(two)
    assert b.shape[1] > 1.7 * a.shape[1]  # two panels side by side
    # The outlines are drawn: the TC red and AR blue appear in the picture.
    rgb = (b[..., :3] * 255).round().astype(int)
    assert ((rgb == [214, 39, 40]).all(axis=-1)).sum() > 10
    assert ((rgb == [31, 119, 180]).all(axis=-1)).sum() > 10
    with pytest.raises(ValueError, match=r"truth has shape \(3, 3\), expected \(24, 36\)"):
        plot_events(str(tmp_path / "x.png"), tmq, _mask(), truth=np.zeros((3, 3)))
