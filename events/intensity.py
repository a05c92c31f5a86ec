"""Intensities of objects from the input fields: max TMQ, max wind speed, min PSL, mean PRECT.

The fields come from the files the masks were predicted from (or any netCDF
with the same times and grid), found by time. Each quantity is computed
where its variables exist: wind speed from U850 and V850, else from UBOT
and VBOT. Mean PRECT is weighted by the cells' areas.

    source = FieldSource(["cam5.h2.0001.nc", ...], lat, lon)
    values = source.intensities(when, objects, labels, grid)   # one dict per object
"""

import numpy as np
import scipy.ndimage

from data.errors import DataFileError
from data.model_output import _LAT, _LON

COLUMNS = ("max_tmq", "max_wind_speed", "min_psl", "mean_prect")
"""The per-object intensity columns (kg m-2, m s-1, Pa, m s-1)."""

_WINDS = (("U850", "V850"), ("UBOT", "VBOT"))


class FieldSource:
    """Input field files indexed by time, read onto the masks' grid.

    Args:
        paths: netCDF files holding some of TMQ, U850/V850 or UBOT/VBOT, PSL, PRECT.
        lat, lon: the masks' grid (any latitude order; longitudes compared modulo 360).

    Raises:
        DataFileError: a file that cannot be read, has none of the variables
            or lies on another grid.
    """

    def __init__(self, paths, lat, lon):
        import xarray as xr

        self.lat, self.lon = np.asarray(lat, float), np.asarray(lon, float)
        self.paths = [str(p) for p in paths]
        self._where = {}  # time -> (file index, time index)
        self._grid_index = []
        self.variables = None
        for n, path in enumerate(self.paths):
            try:
                ds = xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(
                    use_cftime=True))
            except (OSError, ValueError, RuntimeError) as e:
                raise DataFileError(path, f"cannot be read as netCDF: "
                                          f"{' '.join(str(e).split())[:200]}") from None
            with ds:
                names = self._names(ds)
                if not names:
                    raise DataFileError(path, "has none of TMQ, U850/V850, UBOT/VBOT, PSL, "
                                              "PRECT; expected the input fields of the masks")
                if self.variables is None:
                    self.variables = names
                elif set(names) != set(self.variables):
                    raise DataFileError(path, f"holds {', '.join(names)}; the first field "
                                              f"file holds {', '.join(self.variables)}")
                first = ds[names[0]]
                time = first.dims[0]
                self._grid_index.append(self._index(path, ds, first))
                for t, when in enumerate(ds[time].values if time in ds.variables else []):
                    self._where[when] = (n, t)
        self._open = {}

    @staticmethod
    def _names(ds):
        names = [v for v in ("TMQ", "PSL", "PRECT") if v in ds.variables]
        for u, v in _WINDS:
            if u in ds.variables and v in ds.variables:
                return names + [u, v]
        return names

    def _index(self, path, ds, variable):
        """Row and column indices that put the file's grid on the masks'."""
        dims = variable.dims
        lat_dim = next((d for d in dims if d.lower() in _LAT), None)
        lon_dim = next((d for d in dims if d.lower() in _LON), None)
        if len(dims) != 3 or lat_dim is None or lon_dim is None or dims[0] in (lat_dim, lon_dim):
            raise DataFileError(path, f"{variable.name} has dimensions {dims}; expected "
                                      "(time, lat, lon)")
        lat = np.asarray(ds[lat_dim].values, float)
        lon = np.mod(np.asarray(ds[lon_dim].values, float), 360.0)
        rows = np.abs(lat[None, :] - self.lat[:, None]).argmin(1)
        gap = np.abs((lon[None, :] - np.mod(self.lon, 360.0)[:, None] + 180.0) % 360.0 - 180.0)
        cols = gap.argmin(1)
        step = np.abs(np.diff(self.lat)).min() if len(self.lat) > 1 else 1.0
        if len(lat) != len(self.lat) or len(lon) != len(self.lon) or \
                np.abs(lat[rows] - self.lat).max() > 1e-3 * step or \
                gap[np.arange(len(cols)), cols].max() > 1e-3 * step:
            raise DataFileError(path, f"grid is {len(lat)}x{len(lon)}; the masks' is "
                                      f"{len(self.lat)}x{len(self.lon)} (or the coordinates "
                                      "differ); expected the masks' input fields")
        return dims, np.ix_(rows, cols)

    def read(self, when):
        """`{name: (H, W) float64}` of the fields at time `when`, on the masks' grid."""
        import xarray as xr

        if when not in self._where:
            raise DataFileError(self.paths[0] if len(self.paths) == 1 else "--fields",
                                f"no field file holds time {when}; expected one for every "
                                "mask time step")
        n, t = self._where[when]
        if n not in self._open:
            for ds in self._open.values():
                ds.close()
            self._open = {n: xr.open_dataset(self.paths[n], decode_times=False)}
        ds = self._open[n]
        dims, index = self._grid_index[n]
        return {name: np.asarray(ds[name].transpose(*dims).isel({dims[0]: t}).values,
                                 np.float64)[index] for name in self.variables}

    def close(self):
        for ds in self._open.values():
            ds.close()
        self._open = {}

    def intensities(self, when, objects, labels, grid):
        """One dict per object with the `COLUMNS` its fields allow."""
        return object_intensities(self.read(when), objects, labels, grid)


def object_intensities(fields, objects, labels, grid):
    """Per object: max TMQ, max wind speed, min PSL and area-weighted mean PRECT.

    Args:
        fields: `{name: (H, W)}` on the objects' grid.
        objects: from `find_objects`.
        labels: `{class_id: labels}` from `find_objects`.
        grid: the `Grid`.

    Returns:
        A list of dicts, one per object, with the keys of `COLUMNS` the fields allow.
    """
    wind = next((np.hypot(fields[u], fields[v]) for u, v in _WINDS
                 if u in fields and v in fields), None)
    area = np.broadcast_to(grid.row_area_km2[:, None], grid.shape)
    out = [{} for _ in objects]
    for class_id in {o.class_id for o in objects}:
        which = [k for k, o in enumerate(objects) if o.class_id == class_id]
        index = [objects[k].label for k in which]
        lab = labels[class_id]
        found = {}
        if "TMQ" in fields:
            found["max_tmq"] = scipy.ndimage.maximum(fields["TMQ"], lab, index)
        if wind is not None:
            found["max_wind_speed"] = scipy.ndimage.maximum(wind, lab, index)
        if "PSL" in fields:
            found["min_psl"] = scipy.ndimage.minimum(fields["PSL"], lab, index)
        if "PRECT" in fields:
            found["mean_prect"] = (scipy.ndimage.sum_labels(fields["PRECT"] * area, lab, index)
                                   / scipy.ndimage.sum_labels(area, lab, index))
        for name, values in found.items():
            for k, value in zip(which, np.atleast_1d(values), strict=True):
                out[k][name] = float(value)
    return out
