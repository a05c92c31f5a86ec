"""Climatology on the grid: how often each cell is in an event, where tracks start and pass.

Accumulated while the time series streams by (`Climatology.add` per time
step, `finish` at the end), written as CF netCDF with one variable per
quantity on (class, lat, lon), so that two runs (two scenarios) compare in
a few lines of xarray:

    a, b = xr.open_dataset("hist/climatology.nc"), xr.open_dataset("ssp585/climatology.nc")
    (b.frequency - a.frequency).sel(event="tropical_cyclone").plot()
"""

import numpy as np

from data.layouts import CLASSES


class Climatology:
    """Per class and cell: fraction of time inside an object, genesis and track counts.

    Args:
        grid: the masks' `events.objects.Grid`.
        class_ids: the event classes (ids into `data.CLASSES`). Defaults to (1, 2).
    """

    def __init__(self, grid, class_ids=(1, 2)):
        self.grid = grid
        self.class_ids = tuple(class_ids)
        shape = (len(self.class_ids), *grid.shape)
        self.inside = np.zeros(shape, np.int64)  # time steps each cell is inside an object
        self.genesis = np.zeros(shape, np.int64)  # tracks that start in each cell
        self.tracks = np.zeros(shape, np.int64)  # distinct tracks through each cell
        self.steps = 0
        self._cells = {}  # active track -> (class index, set of flat cells)
        self._seen = set()

    def add(self, objects, labels, track_ids):
        """One time step: its objects (kept ones), their labels and their track ids."""
        self.steps += 1
        active = set()
        for obj, track in zip(objects, track_ids, strict=True):
            k = self.class_ids.index(obj.class_id)
            cells = np.flatnonzero(labels[obj.class_id].ravel() == obj.label)
            self.inside[k].ravel()[cells] += 1
            if track not in self._seen:  # genesis: the cell of the first centroid
                self._seen.add(track)
                row, col = self._cell(obj.lat, obj.lon)
                self.genesis[k, row, col] += 1
            entry = self._cells.setdefault(track, (k, set()))
            entry[1].update(cells.tolist())
            active.add(track)
        for track in [t for t in self._cells if t not in active]:  # ended: count its cells
            self._count(*self._cells.pop(track))

    def finish(self):
        """Counts the tracks still running at the end of the series."""
        for track in list(self._cells):
            self._count(*self._cells.pop(track))

    def _count(self, k, cells):
        self.tracks[k].ravel()[np.fromiter(cells, np.int64)] += 1

    def _cell(self, lat, lon):
        row = int(np.argmin(np.abs(self.grid.lat - lat)))
        col = int(np.argmin(np.abs((self.grid.lon - lon + 180.0) % 360.0 - 180.0)))
        return row, col

    def to_dataset(self, attrs=None):
        """The climatology as an xarray Dataset (CF: units, long names, coordinates)."""
        import xarray as xr

        names = [CLASSES[c] for c in self.class_ids]
        dims = ("event", "lat", "lon")
        frequency = self.inside / max(self.steps, 1)
        return xr.Dataset(
            {"frequency": (dims, frequency, {
                "long_name": "fraction of time steps the cell is inside an event",
                "units": "1"}),
             "genesis_count": (dims, self.genesis.astype(np.int32), {
                 "long_name": "tracks starting in the cell", "units": "1"}),
             "track_count": (dims, self.tracks.astype(np.int32), {
                 "long_name": "distinct tracks passing through the cell", "units": "1"})},
            coords={"event": ("event", np.array(names, dtype=object),
                              {"long_name": "event class"}),
                    "lat": ("lat", self.grid.lat, {"units": "degrees_north",
                                                   "standard_name": "latitude", "axis": "Y"}),
                    "lon": ("lon", self.grid.lon, {"units": "degrees_east",
                                                   "standard_name": "longitude", "axis": "X"})},
            attrs={"Conventions": "CF-1.8", "title": "Event climatology",
                   "time_steps": self.steps, **(attrs or {})})


def compare(path_a, path_b):
    """Lines describing how climatology B differs from A (global means, track totals)."""
    import xarray as xr

    lines = []
    with xr.open_dataset(path_a) as a, xr.open_dataset(path_b) as b:
        weights = np.cos(np.radians(a["lat"]))
        for event in a["event"].values:
            fa = float(a["frequency"].sel(event=event).weighted(weights).mean())
            fb = float(b["frequency"].sel(event=event).weighted(weights).mean())
            ga = int(a["genesis_count"].sel(event=event).sum())
            gb = int(b["genesis_count"].sel(event=event).sum())
            change = f"{100 * (fb - fa) / fa:+.1f}%" if fa else "n/a"
            lines.append(f"{event}: area-mean frequency {fa:.4f} -> {fb:.4f} ({change}); "
                         f"tracks {ga} -> {gb} ({gb - ga:+d})")
    return lines
