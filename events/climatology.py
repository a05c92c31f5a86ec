"""Climatology on the grid: how often each cell is in an event, where tracks start and pass.

Accumulated while the time series streams by (`Climatology.add` per time
step, `finish` at the end), written as CF netCDF with one variable per
quantity on (class, lat, lon), so that two runs (two scenarios) compare in
a few lines of xarray:

    a, b = xr.open_dataset("hist/climatology.nc"), xr.open_dataset("ssp585/climatology.nc")
    (b.frequency - a.frequency).sel(event="tropical_cyclone").plot()

A time chunk analysed on its own (`events.series`) cannot count the tracks
that cross its borders: it hands their cells back (`border_chains`) and
the process that stitches the chunks counts them once per track
(`count_track`).
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
        self.genesis = np.zeros(shape, np.int64)  # tracks that start in each cell (after step 0)
        self.tracks = np.zeros(shape, np.int64)  # distinct tracks through each cell
        self.steps = 0
        self.border_chains = []  # (first object's (step, class, label), class index, cells)
        self._open = {}  # chain -> [class index, set of flat cells, linked before the chunk]
        self._chain_of = {}  # (class, label) at the last step -> chain

    def add(self, objects, labels, links, step=None):
        """One time step.

        Args:
            objects: its kept objects (`find_objects`).
            labels: `{class_id: labels}` of the step.
            links: `{(class, label): (class, label) at the previous step}`
                (`events.tracks.link`); an object linked to one this
                climatology has not seen continues a track from before the chunk.
            step: the step's index in the series. Defaults to the count so far.
        """
        step = self.steps if step is None else step
        self.steps += 1
        chain_of = {}
        for obj in objects:
            k = self.class_ids.index(obj.class_id)
            key = (obj.class_id, obj.label)
            cells = np.flatnonzero(labels[obj.class_id].ravel() == obj.label)
            self.inside[k].ravel()[cells] += 1
            parent = links.get(key)
            if parent is not None and parent in self._chain_of:
                chain = self._chain_of[parent]
            else:
                chain = (step, *key)
                self._open[chain] = [k, set(), parent is not None]
                # Genesis: the cell of the first centroid. An object at the series'
                # first step may have begun before it, so it is not counted.
                if parent is None and step > 0:
                    row, col = self._cell(obj.lat, obj.lon)
                    self.genesis[k, row, col] += 1
            self._open[chain][1].update(cells.tolist())
            chain_of[key] = chain
        for chain in [c for c in self._open if c not in chain_of.values()]:  # ended
            self._close(chain, continues=False)
        self._chain_of = chain_of

    def finish(self, series_end=True):
        """Closes the tracks still running: counted if the series ends here, else handed back."""
        for chain in list(self._open):
            self._close(chain, continues=not series_end)

    def _close(self, chain, continues):
        k, cells, linked_before = self._open.pop(chain)
        cells = np.fromiter(cells, np.int64, len(cells))
        if linked_before or continues:
            self.border_chains.append((chain, k, cells))
        else:
            self.tracks[k].ravel()[cells] += 1

    def count_track(self, k, cells):
        """Counts one track of class index `k` through the flat `cells` (stitching chunks)."""
        self.tracks[k].ravel()[np.unique(cells)] += 1

    def merge(self, other):
        """Adds another chunk's counts (its border chains are left to the caller)."""
        self.inside += other.inside
        self.genesis += other.genesis
        self.tracks += other.tracks
        self.steps += other.steps

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
                 "long_name": "tracks starting in the cell (after the first time step)",
                 "units": "1"}),
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
            ga, gb = (_tracks(d, event) for d in (a, b))
            change = f"{100 * (fb - fa) / fa:+.1f}%" if fa else "n/a"
            lines.append(f"{event}: area-mean frequency {fa:.4f} -> {fb:.4f} ({change}); "
                         f"tracks {ga} -> {gb} ({gb - ga:+d})")
    return lines


def _tracks(dataset, event):
    """The class's track total (`track_total`; files without it: its geneses)."""
    name = "track_total" if "track_total" in dataset else "genesis_count"
    return int(dataset[name].sel(event=event).sum())
