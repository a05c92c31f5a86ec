"""Predicted masks on disk (CF netCDF, written step by step or from parts) and maps as PNG."""

import os

import matplotlib.image
import netCDF4
import numpy as np
import pytest
import xarray as xr

from data.maps import plot_events
from data.predictions import MaskFile, mask_path, remove_unfinished, write_masks


def _mask(shift=0):
    mask = np.zeros((24, 36), np.uint8)
    mask[4:8, 5 + shift:9 + shift] = 1
    mask[12:14, 3:30] = 2
    return mask


class _Source:
    """What a mask file needs of its input: a model-output file on a 2-degree grid."""

    def __init__(self, path, num_times=3, geo=True):
        self.path, self.num_times, self.grid = str(path), num_times, (24, 36)
        self.lat_values = np.linspace(-46, 46, 24) if geo else None
        self.lon_values = np.arange(36) * 10.0 if geo else None

    def coordinate(self, name):
        return np.arange(self.num_times) * 0.125, {"units": "days since 2106-01-01",
                                                   "calendar": "noleap"}


def _probabilities(masks):
    p = np.full((*masks.shape, 3), 0.1, np.float32)
    np.put_along_axis(p, masks[..., None].astype(int), 0.8, axis=-1)
    return p


@pytest.mark.parametrize("kind", [None, "byte", "float32"])
def test_masks_and_probabilities_round_trip_in_xarray(tmp_path, kind):
    masks = np.stack([_mask(s) for s in range(3)])
    probs = _probabilities(masks) if kind else None
    path = write_masks(_Source(tmp_path / "run.h2.nc"), str(tmp_path), masks, probs, kind,
                       attrs={"model": "tiramisu"})
    assert path == str(tmp_path / "run.h2.mask.nc") == mask_path(tmp_path / "run.h2.nc",
                                                                  str(tmp_path))
    with xr.open_dataset(path) as ds:  # decoded: cftime times, scaled probabilities
        np.testing.assert_array_equal(ds["mask"].values, masks)
        assert ds["mask"].dims == ("time", "lat", "lon")
        assert str(ds["time"].values[1]) == "2106-01-01 03:00:00"
        assert ds.attrs["model"] == "tiramisu" and ds.attrs["Conventions"] == "CF-1.8"
        names = sorted(v for v in ds.data_vars if v.startswith("probability_"))
        if kind is None:
            assert names == []
        else:
            assert names == ["probability_atmospheric_river", "probability_background",
                             "probability_tropical_cyclone"]
            got = ds["probability_tropical_cyclone"].values
            # bytes: 0.8 -> 204/255 exactly; float32 as given
            want = np.rint(probs[..., 1] * 255) / 255 if kind == "byte" else probs[..., 1]
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert os.listdir(tmp_path) == ["run.h2.mask.nc"]


def test_parts_merge_to_the_same_bytes_as_one_writer(tmp_path):
    source = _Source(tmp_path / "x.nc", num_times=5)
    masks = np.stack([_mask(s) for s in range(5)])
    probs = _probabilities(masks)
    whole = write_masks(source, str(tmp_path), masks, probs, "byte")
    expected = open(whole, "rb").read()
    os.remove(whole)
    from data.predictions import open_mask_file

    for first, last in ((0, 1), (2, 4)):  # two ranks' parts
        part = open_mask_file(source, f"{whole}.part-{first}", "byte",
                              times=range(first, last + 1))
        for t in range(first, last + 1):
            part.write(t - first, masks[t], probs[t])
        part.commit()
    out = open_mask_file(source, whole, "byte")
    for first in (0, 2):
        out.copy_from(f"{whole}.part-{first}", first)
    out.commit()
    assert open(whole, "rb").read() == expected


def test_an_input_without_coordinates_gets_index_dimensions(tmp_path):
    source = _Source(tmp_path / "data-1.h5", num_times=1, geo=False)
    source.coordinate = lambda name: (None, {})
    path = write_masks(source, str(tmp_path), _mask()[None])
    with netCDF4.Dataset(path) as f:
        assert f["mask"].dimensions == ("time", "y", "x")
        assert "time" not in f.variables and "lat" not in f.variables
        np.testing.assert_array_equal(f["mask"][0], _mask())


def test_unfinished_writes_leave_nothing_that_looks_complete(tmp_path):
    source = _Source(tmp_path / "a.nc")
    out = MaskFile(mask_path(source.path, str(tmp_path)), source.path, 3, (24, 36))
    out.write(0, _mask())
    assert not os.path.exists(out.path)  # only the temporary name exists
    with pytest.raises(ValueError, match=r"has shape \(2, 2\); expected \(24, 36\)"):
        out.write(1, np.zeros((2, 2)))
    out.abort()
    assert os.listdir(tmp_path) == []
    for name in ("a.mask.nc.tmp-123", "a.mask.nc.part-4", "a.mask.nc.part-4.tmp-9",
                 "a.mask.nc", "notes.tmp-1", "b.nc"):
        (tmp_path / name).write_bytes(b"")
    assert remove_unfinished(str(tmp_path)) == ["a.mask.nc.part-4", "a.mask.nc.part-4.tmp-9",
                                                "a.mask.nc.tmp-123"]
    assert sorted(os.listdir(tmp_path)) == ["a.mask.nc", "b.nc", "notes.tmp-1"]
    with pytest.raises(ValueError, match=r"have shape \(2, 24, 36\); expected \(3, 24, 36\)"):
        write_masks(source, str(tmp_path), np.zeros((2, 24, 36)))


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
