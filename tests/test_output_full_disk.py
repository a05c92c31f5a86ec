"""A full disk while climseg-events writes its outputs: one line naming the output, the
outputs written before it whole, no temporary file left (a real, full tmpfs)."""

import csv
import os

import numpy as np
import pytest
import xarray as xr
from conftest import fill_disk

from events.cli import main

OUTPUTS = ("events.csv", "tracks.csv", "regions.csv", "events.nc", "tracks.nc",
           "climatology.nc")



@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    lat, lon = np.arange(-89.0, 90.0, 2.0), np.arange(0.0, 360.0, 2.0)
    mask = np.zeros((6, lat.size, lon.size), np.int8)
    for t in range(6):  # a cyclone moving east, a river band
        mask[t, 40:44, 10 + 2 * t:16 + 2 * t] = 1
        mask[t, 60:62, :] = 2
    path = tmp_path_factory.mktemp("masks") / "masks.nc"
    xr.Dataset({"mask": (("time", "lat", "lon"), mask)},
               coords={"time": ("time", np.arange(6) * 3.0,
                                {"units": "hours since 2106-01-01", "calendar": "noleap"}),
                       "lat": ("lat", lat, {"units": "degrees_north"}),
                       "lon": ("lon", lon, {"units": "degrees_east"})}).to_netcdf(path)
    return path


# Bytes left: the first CSV does not fit; a netCDF table does not (netCDF-C reports
# "Permission denied" or "HDF error", not ENOSPC); the climatology does not.
@pytest.mark.parametrize("leave", [1000, 30000, 100000])
def test_a_full_disk_names_the_output_and_keeps_the_ones_before(masks, small_disk, leave,
                                                                capsys):
    fill_disk(small_disk, leave)
    out = small_disk / "out"
    assert main(["--input", str(masks), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err
    prefix = f"climseg-events: error: {out}/"
    assert err.startswith(prefix), err
    name = err[len(prefix):].split(":")[0]
    assert name in OUTPUTS, err
    reason = "No space left on device" if name.endswith(".csv") else (
        "netCDF could not write it (")
    assert err[len(prefix) + len(name):].startswith(f": {reason}"), err
    if name.endswith(".nc"):
        assert "free on its disk: is the disk full?" in err
    assert err.endswith("; the files written before are complete\n")
    left = sorted(os.listdir(out))
    assert name not in left and all(n in OUTPUTS for n in left), left  # no temporary file
    for written in left:  # every output there is whole
        if written.endswith(".csv"):
            with open(out / written) as f:
                assert list(csv.DictReader(f))
        else:
            with xr.open_dataset(out / written) as ds:
                ds.load()
    if leave == 100000:
        assert name == "climatology.nc" and {"events.nc", "tracks.nc"} <= set(left)
