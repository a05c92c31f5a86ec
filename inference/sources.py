"""The files prediction reads, one kind of input each: HDF5 samples and climate-model output.

`open_source(path, ...)` gives an object with the file's number of time
steps, its grid and coordinates (`lat_values`, `lon_values`,
`coordinate("time")`: what its mask file needs) and `read(t)` (fields and
labels of time step t).
"""

import os

import numpy as np

from data import predictions
from data.errors import DataFileError
from data.layouts import inspect_file, read_sample, sample_coordinates
from data.model_output import ModelOutput, is_netcdf


class _SampleFile:
    """An HDF5 sample (DeepCAM or SC18 layout): one time step. Its mask file has the
    sample's `lat`/`lon` where it holds them, else index dimensions."""

    num_times = 1

    def __init__(self, path, channels):
        self.path, self.channels = path, channels
        info = inspect_file(path)
        self.grid = (info.height, info.width)
        self.lat_values = self.lon_values = None
        lat, lon = sample_coordinates(path)
        if lat is not None and (lat.size, lon.size) == self.grid \
                and np.all(np.diff(lat) > 0) and np.all(np.diff(lon) > 0):
            self.lat_values, self.lon_values = lat, lon

    def coordinate(self, name):
        return None, {}

    def read(self, t):
        return read_sample(self.path, channels=self.channels, labels_required=False)

    def close(self):
        pass


def open_source(path, channels, rename=None):
    """The input file `path`, opened for prediction (metadata only).

    netCDF files (by name: .nc, .nc4, ...) are read as model output with
    xarray, many time steps each; other files as HDF5 samples.

    Raises:
        DataFileError: the file cannot be used; the message says why.
    """
    if is_netcdf(path):
        return ModelOutput(path, channels=channels, rename=rename)
    return _SampleFile(path, channels)


def output_done(path, out_dir):
    """Whether the output of input `path` is complete in `out_dir` (renamed into place last)."""
    return os.path.isfile(predictions.mask_path(path, out_dir))


__all__ = ["DataFileError", "open_source", "output_done"]
