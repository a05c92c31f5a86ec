"""Writes climate-model output as models do, for tests: many time steps, any layout."""

import numpy as np
import xarray as xr

import data
from data.synthetic import synthesize_sample


def synthetic_steps(count, height, width, seed=0):
    """`(fields, labels)`: (T, H, W, 16) float32 and (T, H, W) int32, canonical grid."""
    rng = np.random.default_rng(seed)
    samples = [synthesize_sample(rng, height, width) for _ in range(count)]
    return (np.stack([s[0] for s in samples]),
            np.stack([s[1]["labels_0"] for s in samples]).astype(np.int32))


def write_model_output(path, fields, labels=None, *, order=("time", "lat", "lon"),
                       descending=False, lon180=False, file_format="NETCDF4", rename=None,
                       channels=None):
    """A CAM5-style history file of `fields` (canonical grid), stored the way asked.

    Args:
        order: the variables' dimension order.
        descending: latitudes north to south.
        lon180: longitudes -180..180 (the canonical 0..360 rolled).
        file_format: "NETCDF4", "NETCDF3_CLASSIC" or "NETCDF3_64BIT".
        rename: `{CAM5 name: name in the file}`.
        channels: CAM5 names to write (default all 16).
    """
    count, height, width, _ = fields.shape
    lat = (np.arange(height) + 0.5) * 180.0 / height - 90.0
    lon = np.arange(width) * 360.0 / width
    lat_order = np.arange(height)[::-1] if descending else np.arange(height)
    lon_order = np.arange(width)
    if lon180:
        lon = np.where(lon >= 180.0, lon - 360.0, lon)
        lon_order = np.argsort(lon, kind="stable")
    variables = {}
    for c, name in enumerate(data.CHANNELS):
        if channels is not None and name not in channels:
            continue
        planes = fields[:, lat_order][:, :, lon_order, c]
        array = xr.DataArray(planes, dims=("time", "lat", "lon"),
                             attrs={"units": "1", "long_name": name}).transpose(*order)
        variables[(rename or {}).get(name, name)] = array
    if labels is not None:
        variables["LABELS"] = xr.DataArray(labels[:, lat_order][:, :, lon_order],
                                           dims=("time", "lat", "lon")).transpose(*order)
    dataset = xr.Dataset(variables, coords={
        "time": ("time", np.arange(count) * 0.125,
                 {"units": "days since 2106-01-01 00:00:00", "calendar": "noleap"}),
        "lat": ("lat", lat[lat_order], {"units": "degrees_north"}),
        "lon": ("lon", lon[lon_order], {"units": "degrees_east"})})
    dataset.to_netcdf(path, format=file_format)
    return path
