"""Predicted masks as CF netCDF files, written time step by time step, atomically."""

import contextlib
import os
import re

import numpy as np

from data.layouts import CLASSES

PROBABILITIES = ("byte", "float32")
# The names a writer leaves while it works (`NAME.mask.nc.tmp-PID`) and the
# parts of one file that several ranks write (`NAME.mask.nc.part-T`): never
# a complete output, so a new run removes them.
_UNFINISHED = re.compile(r"\.mask\.nc\.(tmp-\d+|part-\d+(\.tmp-\d+)?)$")


def mask_path(source, out_dir):
    """The output file for input `source`: `<out_dir>/<name>.mask.nc`."""
    stem = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(out_dir, f"{stem}.mask.nc")


def remove_unfinished(out_dir):
    """Removes what interrupted writers left in `out_dir` (only those names); returns them."""
    removed = sorted(n for n in os.listdir(out_dir) if _UNFINISHED.search(n))
    for name in removed:
        os.remove(os.path.join(out_dir, name))
    return removed


def _netcdf_lock():
    """The lock around every netCDF call climseg makes: reads in other threads (the
    input pipeline's) and these writes never run in the library at once."""
    from data.model_output import NETCDF_LOCK

    return NETCDF_LOCK


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("climseg")
    except PackageNotFoundError:
        return "unknown"


class MaskFile:
    """One CF-1.8 netCDF file of masks (and optionally class probabilities), written
    time step by time step and renamed into place by `commit`.

    The file holds `mask` (time, lat, lon) as bytes with CF `flag_values` and
    `flag_meanings`, compressed and chunked by time step; the input's time
    coordinate as it was (values, units, calendar); latitude and longitude
    (ascending, 0..360) with their units, so xarray, CDO, NCO, ncview and
    Panoply open it as it is. An input without coordinates (an HDF5 sample)
    gets index dimensions `y` and `x` and no time coordinate. With
    `probabilities`, each class has `probability_<class>`: bytes (255
    levels, packed as CF signed bytes: p = (b + 128) / 255, `scale_factor`
    1/255, `add_offset` 128/255) or float32. Global attributes name the source
    file and `attrs` (the checkpoint, the model).

    The same steps give the same bytes, whichever process writes them and
    however they were split: a file assembled from parts (`merge`) equals
    the one written directly.

    Args:
        path: the file to write (`mask_path`); a temporary name is used until `commit`.
        source: the input's path (for the attributes).
        num_times, grid: the number of time steps and (H, W).
        lat, lon: coordinate values in degrees, or None for index dimensions.
        time, time_attrs: the time coordinate's values and attributes, or None.
        probabilities: None, "byte" or "float32".
        attrs: extra global attributes.
    """

    def __init__(self, path, source, num_times, grid, lat=None, lon=None, time=None,
                 time_attrs=None, probabilities=None, attrs=None):
        import netCDF4

        if probabilities not in (None, *PROBABILITIES):
            raise ValueError(f"probabilities={probabilities!r}; expected one of "
                             f"{', '.join(PROBABILITIES)} or None")
        self.path, self.num_times, self.grid = path, int(num_times), tuple(grid)
        self.probabilities = probabilities
        self._tmp = f"{path}.tmp-{os.getpid()}"
        geo = lat is not None and lon is not None
        dims = ("time", "lat", "lon") if geo else ("time", "y", "x")
        with _netcdf_lock():
            self._nc = nc = netCDF4.Dataset(self._tmp, "w", format="NETCDF4")
            try:
                nc.setncatts({
                    "Conventions": "CF-1.8",
                    "title": "Tropical cyclone and atmospheric river masks",
                    "source": f"climseg {_version()}",
                    "history": f"climseg-predict on {os.path.basename(source)}",
                    "input_file": os.path.abspath(source),
                    **{k: str(v) for k, v in (attrs or {}).items()}})
                nc.createDimension("time", self.num_times)
                nc.createDimension(dims[1], self.grid[0])
                nc.createDimension(dims[2], self.grid[1])
                if geo:
                    for name, values, axis in (("lat", lat, "Y"), ("lon", lon, "X")):
                        var = nc.createVariable(name, "f8", (name,), fill_value=False)
                        var.setncatts({
                            "units": "degrees_north" if axis == "Y" else "degrees_east",
                            "standard_name": "latitude" if axis == "Y" else "longitude",
                            "long_name": "latitude" if axis == "Y" else "longitude",
                            "axis": axis})
                        var[:] = np.asarray(values, np.float64)
                if time is not None:
                    time = np.atleast_1d(np.asarray(time))
                    var = nc.createVariable("time", time.dtype, ("time",), fill_value=False)
                    keep = {k: v for k, v in (time_attrs or {}).items()
                            if k in ("units", "calendar", "long_name")}
                    var.setncatts({**keep, "standard_name": "time", "axis": "T"})
                    var[:] = time
                chunks = (1, *self.grid)
                self._mask = nc.createVariable("mask", "i1", dims, zlib=True, complevel=4,
                                               chunksizes=chunks, fill_value=False)
                self._mask.setncatts({
                    "long_name": "predicted extreme-weather class",
                    "flag_values": np.arange(len(CLASSES), dtype=np.int8),
                    "flag_meanings": " ".join(CLASSES),
                    "valid_range": np.array([0, len(CLASSES) - 1], np.int8)})
                self._probs = []
                for name in CLASSES if probabilities else ():
                    kind = "i1" if probabilities == "byte" else "f4"
                    var = nc.createVariable(f"probability_{name}", kind, dims, zlib=True,
                                            complevel=4, chunksizes=chunks, fill_value=False)
                    var.set_auto_maskandscale(False)
                    var.setncatts({"long_name": f"predicted probability of {name}",
                                   "units": "1"})
                    if probabilities == "byte":  # CF-1.8 packs into signed bytes
                        var.setncatts({"scale_factor": np.float32(1 / 255),
                                       "add_offset": np.float32(128 / 255),
                                       "valid_range": np.array([-128, 127], np.int8)})
                    else:
                        var.setncatts({"valid_range": np.array([0, 1], np.float32)})
                    self._probs.append(var)
            except BaseException:
                self._discard()
                raise

    def write(self, t, mask, probabilities=None):
        """Time step `t`: `mask` (H, W) class ids, `probabilities` (H, W, classes) in [0, 1]."""
        mask = np.asarray(mask)
        if mask.shape != self.grid:
            raise ValueError(f"mask for {self.path} has shape {mask.shape}; expected "
                             f"{self.grid}")
        if self.probabilities:
            probabilities = np.asarray(probabilities, np.float32)
            if self.probabilities == "byte":  # p = (stored + 128) / 255
                probabilities = (np.rint(np.clip(probabilities, 0, 1) * 255) - 128
                                 ).astype(np.int8)
        with _netcdf_lock():
            self._mask[t] = mask.astype(np.int8)
            for c, var in enumerate(self._probs):
                var[t] = probabilities[..., c]

    def copy_from(self, part, t0):
        """Writes the time steps of the committed part file `part` from step `t0` on."""
        import netCDF4

        with _netcdf_lock():
            with netCDF4.Dataset(part) as src:
                names = ["mask"] + [v.name for v in self._probs]
                for name in names:
                    src[name].set_auto_maskandscale(False)
                for t in range(src.dimensions["time"].size):
                    for name in names:
                        self._nc[name][t0 + t] = src[name][t]

    def commit(self):
        """Closes the file and renames it into place: from now on it is complete."""
        with _netcdf_lock():
            self._nc.close()
        os.replace(self._tmp, self.path)

    def abort(self):
        """Closes and removes the unfinished file."""
        with _netcdf_lock():
            self._discard()

    def _discard(self):
        with contextlib.suppress(Exception):
            self._nc.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._tmp)


def write_masks(source, out_dir, masks, probabilities=None, kind=None, attrs=None):
    """Writes all time steps of one input's masks at once (see `MaskFile`).

    Args:
        source: an opened input (`data.model_output.ModelOutput` or anything
            with `path`, `num_times`, `grid`, `lat_values`, `lon_values` and
            `coordinate("time")`).
        out_dir: the output directory (must exist).
        masks: (T, H, W) class ids on the source's grid.
        probabilities: (T, H, W, classes), with `kind` "byte" or "float32".
        attrs: extra global attributes.

    Returns:
        The path written (`mask_path`).
    """
    masks = np.asarray(masks)
    if masks.shape != (source.num_times, *source.grid):
        raise ValueError(f"masks for {source.path} have shape {masks.shape}; expected "
                         f"{(source.num_times, *source.grid)}")
    out = open_mask_file(source, mask_path(source.path, out_dir), kind, attrs)
    try:
        for t, mask in enumerate(masks):
            out.write(t, mask, None if probabilities is None else probabilities[t])
    except BaseException:
        out.abort()
        raise
    out.commit()
    return out.path


def open_mask_file(source, path, probabilities=None, attrs=None, times=None):
    """A `MaskFile` for input `source` (its grid and coordinates) at `path`;
    `times` (a range) for a part holding only those steps."""
    time, time_attrs = source.coordinate("time")
    times = times if times is not None else range(source.num_times)
    if time is not None:
        time = np.atleast_1d(time)[times.start:times.stop]
    return MaskFile(path, source.path, len(times), source.grid, lat=source.lat_values,
                    lon=source.lon_values, time=time, time_attrs=time_attrs,
                    probabilities=probabilities, attrs=attrs)
