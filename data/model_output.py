"""Climate-model output (CAM5/CESM history files and the like) as samples, with xarray.

A model writes many time steps per file, only the variables it was asked
for, with dimensions in the order it likes, latitudes either way and
longitudes 0..360 or -180..180, in netCDF4 or netCDF3. `ModelOutput` finds
each channel's variable by name (`rename` maps a model's own names to the
CAM5 names, e.g. `{"PRW": "TMQ"}`; a file without PRW may still hold TMQ),
its dimensions by name or CF
attributes, and hands out every time step as one sample on the canonical
grid climseg's models are trained on: latitude ascending, longitude
ascending from 0 to 360.

    with ModelOutput("cam5.h2.2106-01-01.nc", channels=[0, 1, 2, 7]) as out:
        for t in range(out.num_times):
            fields, labels = out.read(t)       # (H, W, 4) float32; labels or None
"""

import contextlib
import os
import threading

import numpy as np

from data.errors import DataFileError
from data.layouts import CHANNELS, NUM_CLASSES, channel_indices

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".nc3", ".cdf")
LABEL_NAMES = ("LABELS", "labels", "label")

# The HDF5 library inside the netCDF4 package is not thread-safe, and xarray locks only
# its data reads: opening a file reads metadata (filters, chunking) outside any lock,
# and two threads doing so at once crash the process. Every netCDF call climseg makes
# (open, metadata, read, write, close) holds this lock; the reader threads of the
# training and prediction pipelines and the mask writer share it.
NETCDF_LOCK = threading.RLock()

_LAT = ("lat", "latitude", "nlat", "y")
_LON = ("lon", "longitude", "nlon", "x")


def is_netcdf(path):
    """Whether `path` is a netCDF file by its name (netCDF4 or netCDF3)."""
    return os.path.splitext(str(path))[1].lower() in NETCDF_SUFFIXES


def parse_rename(text):
    """`"PRW=TMQ,PSL_x=PSL"` -> `{"PRW": "TMQ", "PSL_x": "PSL"}` (the file's name = climseg's)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or not name or target.upper() not in [c.upper() for c in CHANNELS]:
            raise ValueError(f"{item!r}: expected FILE_NAME=CHANNEL with CHANNEL one of "
                             f"{', '.join(CHANNELS)}")
        mapping[name] = CHANNELS[[c.upper() for c in CHANNELS].index(target.upper())]
    return mapping


def _dimension(dataset, variable, names, standard_name, units):
    """The name of `variable`'s dimension that is latitude (or longitude)."""
    for dim in variable.dims:
        coord = dataset[dim] if dim in dataset.variables else None
        attrs = coord.attrs if coord is not None else {}
        if dim.lower() in names or attrs.get("standard_name") == standard_name \
                or str(attrs.get("units", "")).lower() in units:
            return dim
    return None


def lat_lon_dimensions(dataset, variable):
    """`(lat, lon)`: the names of `variable`'s latitude and longitude dimensions, found by
    name, standard_name or units (either None where none is found)."""
    return (_dimension(dataset, variable, _LAT, "latitude", ("degrees_north", "degree_north")),
            _dimension(dataset, variable, _LON, "longitude", ("degrees_east", "degree_east")))


class ModelOutput:
    """One file of model output: its time steps as samples on the canonical grid.

    Args:
        path: a netCDF4 or netCDF3 file.
        channels: the channels to read, as for `channel_indices` (indices or
            CAM5 names), or `"available"`: those the file has (for its
            metadata). Defaults to all 16.
        rename: `{name in the file: CAM5 channel name}` for other models'
            conventions. Defaults to None.

    Raises:
        DataFileError: the file cannot be read, lacks a channel, or has no
            latitude/longitude; the message says what was found and expected.
    """

    def __init__(self, path, channels=None, rename=None):
        self.path = str(path)
        self._available = channels == "available"
        self.channels = channel_indices(None if self._available else channels)
        with NETCDF_LOCK:
            self._ds = self._open()
            try:
                self._setup(rename or {})
            except DataFileError:
                self._ds.close()
                raise

    def _open(self):
        import xarray as xr

        try:
            return xr.open_dataset(self.path, decode_times=False, mask_and_scale=True,
                                   cache=False)
        except FileNotFoundError:
            raise DataFileError(self.path, "no such file") from None
        except (OSError, ValueError, RuntimeError) as err:
            raise DataFileError(self.path, f"cannot be read as netCDF (netCDF4 or netCDF3; "
                                           f"truncated or not netCDF?): "
                                           f"{' '.join(str(err).split())[:200]}") from None

    def _setup(self, rename):
        ds = self._ds
        by_channel = {target: name for name, target in rename.items()}
        self.variables = []
        if self._available:  # at least one, so that the grid is known
            have = [i for i in self.channels if CHANNELS[i] in ds.variables
                    or by_channel.get(CHANNELS[i]) in ds.variables]
            self.channels = have or self.channels[:1]
        for index in self.channels:
            wanted = CHANNELS[index]
            names = [by_channel[wanted], wanted] if wanted in by_channel else [wanted]
            name = next((n for n in names if n in ds.variables), None)
            if name is None:
                found = ", ".join(sorted(v for v in ds.data_vars)) or "no variables"
                raise DataFileError(self.path, f"has no variable {' or '.join(names)} for "
                                               f"channel {wanted}; found {found}; give "
                                               "--channels, or --rename FILE_NAME=CHANNEL for "
                                               "other names")
            self.variables.append(name)
        first = ds[self.variables[0]]
        self.lat, self.lon = lat_lon_dimensions(ds, first)
        if self.lat is None or self.lon is None:
            raise DataFileError(self.path, f"{self.variables[0]} has dimensions {first.dims}; "
                                           "expected a latitude and a longitude (by name, "
                                           "standard_name or units)")
        others = [d for d in first.dims if d not in (self.lat, self.lon)]
        if len(others) > 1:
            raise DataFileError(self.path, f"{self.variables[0]} has dimensions {first.dims}; "
                                           "expected (time, lat, lon) in any order")
        self.time = others[0] if others else None
        for name in self.variables[1:] + [v for v in LABEL_NAMES if v in ds.variables][:1]:
            extra = set(ds[name].dims) - {self.lat, self.lon, self.time}
            if extra:
                raise DataFileError(self.path, f"{name} has dimensions {ds[name].dims}; "
                                               f"expected those of {self.variables[0]}, "
                                               f"{first.dims}")
        for dim in (self.lat, self.lon):
            if dim not in ds.variables:
                raise DataFileError(self.path, f"dimension {dim} has no coordinate values; "
                                               "expected latitudes and longitudes in degrees")
        self.label_variable = next((v for v in LABEL_NAMES if v in ds.variables), None)
        self.num_times = int(ds.sizes[self.time]) if self.time else 1
        if self.num_times == 0:
            raise DataFileError(self.path, f"has no time steps ({self.time} is empty); "
                                           "expected at least one")
        lat = np.asarray(ds[self.lat]) if self.lat in ds.variables \
            else np.arange(ds.sizes[self.lat], dtype=float)
        lon = np.asarray(ds[self.lon]) if self.lon in ds.variables \
            else np.arange(ds.sizes[self.lon], dtype=float)
        # Canonical grid: latitude ascending, longitude ascending over [0, 360).
        self._lat_order = np.argsort(lat, kind="stable")
        lon360 = np.mod(lon, 360.0) if self.lon in ds.variables else lon
        self._lon_order = np.argsort(lon360, kind="stable")
        self.lat_values = lat[self._lat_order]
        self.lon_values = lon360[self._lon_order]
        self.grid = (len(lat), len(lon))

    def close(self):
        """Closes the file; a later `read` or `coordinate` opens it for that call only."""
        with NETCDF_LOCK:
            if self._ds is not None:
                self._ds.close()
                self._ds = None

    @contextlib.contextmanager
    def _dataset(self):
        """The open dataset, under `NETCDF_LOCK`; opened for this use if closed."""
        with NETCDF_LOCK:
            if self._ds is not None:
                yield self._ds
                return
            ds = self._open()
            try:
                yield ds
            finally:
                ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def coordinate(self, name):
        """`(values, attrs)` of a coordinate as stored (time: raw numbers, units, calendar)."""
        key = {"time": self.time, "lat": self.lat, "lon": self.lon}[name]
        with self._dataset() as ds:
            if key is None or key not in ds.variables:
                return None, {}
            variable = ds[key]
            return np.asarray(variable.values), dict(variable.attrs)

    def _plane(self, ds, name, t):
        variable = ds[name]
        if self.time in variable.dims:
            variable = variable.isel({self.time: t})
        return np.asarray(variable.transpose(self.lat, self.lon).values)

    def _canonical(self, plane):
        return plane[np.ix_(self._lat_order, self._lon_order)]

    def read(self, t):
        """Time step `t`: fields (H, W, C) float32 on the canonical grid, and labels or None.

        Raises:
            DataFileError: NaN/Inf (missing values) in the fields, or labels
                outside the classes.
        """
        try:
            with self._dataset() as ds:
                planes = [self._plane(ds, name, t) for name in self.variables]
                labels = self._plane(ds, self.label_variable, t) if self.label_variable \
                    else None
            fields = np.stack([self._canonical(p) for p in planes], axis=-1)
            labels = None if labels is None else self._canonical(labels)
        except (OSError, RuntimeError, ValueError) as err:  # netCDF's "HDF error", zlib
            raise DataFileError(self.path, f"time step {t}: cannot be read (damaged or "
                                           f"truncated file?): "
                                           f"{' '.join(str(err).split())[:200]}") from None
        fields = fields.astype(np.float32, copy=False)
        if not np.isfinite(fields).all():
            bad = [self.variables[c] for c in range(fields.shape[-1])
                   if not np.isfinite(fields[..., c]).all()]
            raise DataFileError(self.path, f"time step {t}: {', '.join(bad)} hold NaN, Inf or "
                                           "missing values; expected finite fields")
        if labels is not None:
            if not np.isfinite(labels).all() or labels.min() < 0 \
                    or labels.max() >= NUM_CLASSES or (labels != np.round(labels)).any():
                raise DataFileError(self.path, f"time step {t}: {self.label_variable} holds "
                                               f"values outside the classes 0..{NUM_CLASSES - 1}")
            labels = labels.astype(np.int32)
        return fields, labels
