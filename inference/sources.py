"""The files prediction reads, one kind of input each: HDF5 samples and climate-model output.

`open_source(path, ...)` gives an object with the file's number of time
steps, its grid, `read(t)` (fields and labels of time step t) and `write`
(its masks, atomically, to the output file named by `data.predictions.mask_path`).
"""

import os

from data import predictions
from data.errors import DataFileError
from data.layouts import inspect_file, read_sample
from data.model_output import ModelOutput, is_netcdf


class _SampleFile:
    """An HDF5 sample (DeepCAM or SC18 layout): one time step, masks in `.mask.h5`."""

    num_times = 1

    def __init__(self, path, channels):
        self.path, self.channels = path, channels
        info = inspect_file(path)
        self.grid = (info.height, info.width)

    def read(self, t):
        return read_sample(self.path, channels=self.channels, labels_required=False)

    def write(self, out_dir, masks, attrs):
        return predictions.write_mask(self.path, out_dir, masks[0], attrs=attrs)

    def close(self):
        pass


class _ModelOutputFile(ModelOutput):
    """netCDF model output: every time step a sample, masks in a CF `.mask.nc`."""

    def write(self, out_dir, masks, attrs):
        return predictions.write_cf_masks(self, out_dir, masks, attrs=attrs)


def open_source(path, channels, rename=None):
    """The input file `path`, opened for prediction (metadata only).

    netCDF files (by name: .nc, .nc4, ...) are read as model output with
    xarray, many time steps each; other files as HDF5 samples.

    Raises:
        DataFileError: the file cannot be used; the message says why.
    """
    if is_netcdf(path):
        return _ModelOutputFile(path, channels=channels, rename=rename)
    return _SampleFile(path, channels)


def output_done(path, out_dir):
    """Whether the output of input `path` is complete in `out_dir` (written last, atomically)."""
    return os.path.isfile(predictions.mask_path(path, out_dir))


__all__ = ["DataFileError", "open_source", "output_done"]
