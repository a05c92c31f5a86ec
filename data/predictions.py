"""Writing predicted masks next to (or beside) the files they were made from."""

import os

import h5netcdf
import h5py
import numpy as np

from data.layouts import CLASSES

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


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
    tmp = f"{path}.tmp-{os.getpid()}"
    meta = {"source": os.path.abspath(source),
            "classes": ",".join(f"{i}={name}" for i, name in enumerate(CLASSES)),
            **{k: str(v) for k, v in (attrs or {}).items()}}
    try:
        if path.endswith(".nc"):
            _write_netcdf(tmp, source, mask, meta)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("climate/prediction", data=mask, compression="gzip")
                f.attrs.update(meta)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


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
