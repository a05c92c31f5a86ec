"""Writing predicted masks next to (or beside) the files they were made from."""

import contextlib
import os

import h5netcdf
import h5py
import numpy as np

from data.layouts import CLASSES
from data.model_output import NETCDF_SUFFIXES


def mask_path(source, out_dir):
    """The output file for `source`: `<out_dir>/<name>.mask.h5` or `.mask.nc` for netCDF."""
    stem, suffix = os.path.splitext(os.path.basename(source))
    ext = ".nc" if suffix.lower() in NETCDF_SUFFIXES else ".h5"
    return os.path.join(out_dir, f"{stem}.mask{ext}")


def write_mask(source, out_dir, mask, attrs=None):
    """Writes one predicted mask atomically (temporary file, then rename).

    HDF5 inputs get `climate/prediction` (H, W) uint8 in a new HDF5 file.
    netCDF inputs get a netCDF file with `PREDICTED_LABELS` on (time, lat, lon)
    and the input's `lat`/`lon` coordinates when it has them, so it lines up
    with the input in xarray or ncview.

    Args:
        source: the input file the mask was predicted from.
        out_dir: the output directory (must exist).
        mask: (H, W) class ids.
        attrs: extra attributes to store (e.g. the checkpoint used).

    Returns:
        The path written.
    """
    mask = np.asarray(mask).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask for {source} has shape {mask.shape}; expected (H, W)")
    path = mask_path(source, out_dir)
    meta = {"source": os.path.abspath(source),
            "classes": ",".join(f"{i}={name}" for i, name in enumerate(CLASSES)),
            **{k: str(v) for k, v in (attrs or {}).items()}}
    with _written_atomically(path) as tmp:
        if path.endswith(".nc"):
            _write_netcdf(tmp, source, mask, meta)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("climate/prediction", data=mask, compression="gzip")
                f.attrs.update(meta)
    return path


@contextlib.contextmanager
def _written_atomically(path):
    """Yields a temporary name to write; renamed to `path` when complete, removed if not."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_netcdf(path, source, mask, meta):
    height, width = mask.shape
    coords = {}
    with h5py.File(source, "r") as src:
        for name, size in (("lat", height), ("lon", width)):
            if name in src and src[name].shape == (size,):
                coords[name] = np.asarray(src[name])
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"time": 1, "lat": height, "lon": width}
        for name, values in coords.items():
            var = f.create_variable(name, (name,), values.dtype)
            var[:] = values
        var = f.create_variable("PREDICTED_LABELS", ("time", "lat", "lon"), "u1",
                                compression="gzip")
        var[0] = mask
        var.attrs["description"] = "predicted class per pixel: " + meta["classes"]
        f.attrs.update(meta)


def write_cf_masks(source, out_dir, masks, attrs=None):
    """Writes the masks of every time step of a model-output file as CF netCDF, atomically.

    The file holds `mask` (time, lat, lon) as bytes with CF `flag_values` and
    `flag_meanings`, compressed and chunked by time step; the input's time
    coordinate as it was (values, units, calendar); latitude and longitude
    (ascending, 0..360) with their units, so xarray, CDO, NCO, ncview and
    Panoply open it as it is. Global attributes name the source file,
    the checkpoint and the model.

    Args:
        source: the `data.model_output.ModelOutput` the masks were predicted from.
        out_dir: the output directory (must exist).
        masks: (T, H, W) class ids on the source's canonical grid.
        attrs: extra global attributes (e.g. the checkpoint used).

    Returns:
        The path written (`<out_dir>/<name>.mask.nc`).
    """
    import xarray as xr

    from data.layouts import CLASSES

    masks = np.asarray(masks).astype(np.int8)
    if masks.shape != (source.num_times, *source.grid):
        raise ValueError(f"masks for {source.path} have shape {masks.shape}; expected "
                         f"{(source.num_times, *source.grid)}")
    path = mask_path(source.path, out_dir)
    mask_attrs = {
        "long_name": "predicted extreme-weather class",
        "flag_values": np.arange(len(CLASSES), dtype=np.int8),
        "flag_meanings": " ".join(CLASSES),
        "valid_range": np.array([0, len(CLASSES) - 1], np.int8),
    }
    coords = {
        "lat": ("lat", np.asarray(source.lat_values, np.float64),
                {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                 "axis": "Y"}),
        "lon": ("lon", np.asarray(source.lon_values, np.float64),
                {"units": "degrees_east", "standard_name": "longitude",
                 "long_name": "longitude", "axis": "X"}),
    }
    time, time_attrs = source.coordinate("time")
    if time is not None:
        keep = {k: v for k, v in time_attrs.items()
                if k in ("units", "calendar", "long_name", "bounds")}
        keep.pop("bounds", None)  # the bounds variable is not copied
        coords["time"] = ("time", np.atleast_1d(time), {**keep, "standard_name": "time",
                                                         "axis": "T"})
    from importlib.metadata import PackageNotFoundError, version

    try:
        climseg_version = version("climseg")
    except PackageNotFoundError:
        climseg_version = "unknown"
    dataset = xr.Dataset(
        {"mask": (("time", "lat", "lon"), masks, mask_attrs)}, coords=coords,
        attrs={"Conventions": "CF-1.8",
               "title": "Tropical cyclone and atmospheric river masks",
               "source": f"climseg {climseg_version}",
               "history": f"climseg-predict on {os.path.basename(source.path)}",
               "input_file": os.path.abspath(source.path),
               **{k: str(v) for k, v in (attrs or {}).items()}})
    encoding = {"mask": {"zlib": True, "complevel": 4, "dtype": "i1", "_FillValue": None,
                         "chunksizes": (1, *source.grid)},
                "lat": {"_FillValue": None}, "lon": {"_FillValue": None}}
    if "time" in coords:
        encoding["time"] = {"_FillValue": None, "dtype": np.asarray(time).dtype}
    with _written_atomically(path) as tmp:
        dataset.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return path
