"""A time series of mask files, analysed in time chunks and stitched into one.

The steps of all files, in time order, are cut into `jobs` contiguous
chunks, each analysed by its own process (`analyse_chunk`): objects,
intensities, the links between its consecutive steps, and its share of the
climatology. A chunk also labels the step before its first, so it links
its first step as a single pass would; since a link depends on two steps
alone (`events.tracks.link`), `stitch` numbers the tracks over all chunks
in time order and gets the same ids, rows and climatology as one process.

    series = Series(files)
    parts = [analyse_chunk(series, a, b) for a, b in series.chunks(2)]
    steps, climatology = stitch(series, parts)
"""

import collections
import concurrent.futures
import multiprocessing

import numpy as np

from data.errors import DataFileError
from data.files import written_atomically
from data.layouts import CLASSES, regular_grid
from data.model_output import lat_lon_dimensions

VARIABLES = ("mask", "PREDICTED_LABELS", "LABELS")

Step = collections.namedtuple("Step", ["index", "time", "path", "time_index", "objects",
                                       "intensity", "links"])
Step.__doc__ = """One analysed time step: its objects (`find_objects`, kept ones), their
intensities (dicts, or None without fields) and its links to the previous step."""


def _coordinates(dataset, lat, lon):
    """The latitudes and longitudes of dimensions `lat` and `lon` as floats, or where
    they have no values, those of a global regular grid (`data.layouts.regular_grid`)."""
    assumed = regular_grid(dataset.sizes[lat], dataset.sizes[lon])
    return tuple(np.asarray(dataset[dim].values, float) if dim in dataset.variables else values
                 for dim, values in zip((lat, lon), assumed, strict=True))


def _open(path, variable=None):
    import xarray as xr

    try:
        return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    except (OSError, ValueError, RuntimeError) as e:
        raise DataFileError(path, f"cannot be read as netCDF: {' '.join(str(e).split())[:200]}") \
            from None


# Names a mask's flag_meanings (or --classes) may give each class, lower case: its
# name in data.CLASSES first.
CLASS_ALIASES = {k: (CLASSES[k], *others) for k, others in (
    (0, ("none", "no_event", "bg")),
    (1, ("tropical_cyclones", "tc", "cyclone")),
    (2, ("atmospheric_rivers", "ar", "river")))}


def class_of(name):
    """The class id (0, 1 or 2) a name stands for (`CLASS_ALIASES`), or None."""
    name = str(name).strip().lower()
    return next((k for k, names in CLASS_ALIASES.items() if name in names), None)


def parse_classes(text):
    """`"1=atmospheric_river,3=background"` -> `{1: 2, 3: 0}` (mask value -> class id)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, sep, name = item.partition("=")
        try:
            value = int(value)
        except ValueError:
            value = None
        if not sep or value is None or class_of(name) is None:
            raise ValueError(f"{item!r}: expected VALUE=CLASS with an integer VALUE and CLASS "
                             "one of tropical_cyclone (tc), atmospheric_river (ar), background")
        mapping[value] = class_of(name)
    if not mapping:
        raise ValueError(f"{text!r}: expected VALUE=CLASS,...")
    return mapping


def _flag_classes(variable):
    """The mask values the variable's CF flag_values/flag_meanings give a class, or None."""
    values, meanings = variable.attrs.get("flag_values"), variable.attrs.get("flag_meanings")
    if values is None or not meanings:
        return None
    try:  # numbers, or (as some tools write them) a string of numbers
        values = [int(v) for v in (values.split() if isinstance(values, str)
                                   else np.atleast_1d(values).tolist())]
    except (TypeError, ValueError):
        return None
    meanings = str(meanings).split()
    if len(values) != len(meanings):
        return None
    found = {v: class_of(m) for v, m in zip(values, meanings, strict=True)}
    return {v: k for v, k in found.items() if k is not None} or None


class Series:
    """The time steps of mask files in time order, and their grid.

    Mask values are event classes: 1 a tropical cyclone, 2 an atmospheric
    river, 0 none, as climseg and ClimateNet write them, or as the mask
    variable's CF `flag_values`/`flag_meanings` name them (`CLASS_ALIASES`),
    or as `classes` maps them. Another value, met in a mask, is an error
    naming the file; NaN (a missing value) is no event.

    Args:
        files: netCDF mask files, in any order: they are ordered by their first time.
        variable: the class-id variable. Defaults to the first of `VARIABLES` found.
        classes: `{mask value: class id}` (`parse_classes`). Defaults to the
            first file's flag meanings, else `{1: 1, 2: 2}`.

    Raises:
        DataFileError: a file without the variable or time steps, files whose
            times cannot be ordered, or grids that differ.
    """

    def __init__(self, files, variable=None, classes=None):
        from events.objects import Grid

        self.classes_from, self.grid_note = "--classes", None
        self.dims = {}  # path -> the mask variable's (time, lat, lon) dimension names
        found, indexed = [], set()
        for path in files:
            with _open(path) as dataset:
                name, times, (time, lat, lon) = self._check(path, dataset, variable)
                self.dims[path] = (time, lat, lon)
                if time not in dataset.variables:
                    indexed.add(path)
                if classes is None:
                    flags = _flag_classes(dataset[name])
                    classes, self.classes_from = (flags, f"the flag meanings of {path}") \
                        if flags else ({1: 1, 2: 2}, "the default")
                if lat not in dataset.variables or lon not in dataset.variables:
                    self.grid_note = (f"{path} has no latitudes and longitudes ({lat}, {lon} "
                                      "are indices): taken as a global regular grid, "
                                      "latitude south to north, longitude from 0 east")
                found.append((times[0], path, name, times,
                              *_coordinates(dataset, lat, lon)))
        if not found:
            raise DataFileError("--input", "holds no time steps")
        try:
            found.sort(key=lambda f: f[0])
        except TypeError:
            raise DataFileError(files[0], "the files' times cannot be ordered (a time axis in "
                                          "some files only, or different calendars)") from None
        self.classes = {0: 0, **{int(v): int(k) for v, k in classes.items()}}
        self.steps = []  # (path, variable, time index, time)
        _, _, _, _, lat, lon = found[0]
        self.grid = Grid(lat, lon)
        for _, path, name, times, lat, lon in found:
            if self.grid.shape != (len(lat), len(lon)) or not (
                    np.allclose(lat, self.grid.lat) and np.allclose(lon, self.grid.lon)):
                raise DataFileError(path, f"grid is {len(lat)}x{len(lon)} from {lat[0]:g},"
                                          f"{lon[0]:g}, but the first file's is "
                                          f"{self.grid.shape[0]}x{self.grid.shape[1]} from "
                                          f"{self.grid.lat[0]:g},{self.grid.lon[0]:g}")
            self.steps += [(path, name, t, when) for t, when in enumerate(times)]
        self.files = [f[1] for f in found]
        seen = {}
        for path, _, t, when in self.steps:
            if path in indexed:
                continue  # a file without times: its steps go in file order
            first = seen.setdefault(str(when), (path, t))
            if first != (path, t):
                raise DataFileError(path, f"time {when} (step {t}) is also step {first[1]} of "
                                          f"{first[0]}; expected every time once (files that "
                                          "overlap in time?)")

    @staticmethod
    def _check(path, dataset, variable):
        names = [variable] if variable else [v for v in VARIABLES if v in dataset.variables]
        if not names or names[0] not in dataset.variables:
            found = ", ".join(sorted(dataset.data_vars)) or "no variables"
            raise DataFileError(path, f"has no {' or '.join([variable] if variable else VARIABLES)}"
                                      f"; found {found}; name the mask variable with --variable")
        name = names[0]
        dims = dataset[name].dims
        lat, lon = lat_lon_dimensions(dataset, dataset[name])
        if len(dims) != 3 or lat is None or lon is None:
            raise DataFileError(path, f"{name} has dimensions {dims}; expected time, latitude "
                                      "and longitude (in any order; lat and lon known by name, "
                                      "standard_name or units)")
        (time,) = [d for d in dims if d not in (lat, lon)]
        times = list(dataset[time].values) if time in dataset.variables \
            else list(range(dataset.sizes[time]))
        if not times:
            raise DataFileError(path, "holds no time steps")
        return name, times, (time, lat, lon)

    def class_ids(self, raw, path, t):
        """A mask's values as class ids (int8, 0 none), by `classes`; one step of `path`."""
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(raw)
            if bad.any():  # missing values: no event
                raw = np.where(bad, 0, raw)
            if not np.array_equal(raw, np.round(raw)):
                raise DataFileError(path, f"step {t}: mask values are not whole numbers; "
                                          "expected class ids")
            raw = raw.astype(np.int64)
        if raw.dtype == bool:
            raw = raw.astype(np.int8)
        low, high = min(self.classes), max(self.classes)  # a lookup over the mapped values
        outside = (raw < low) | (raw > high)
        if self.classes == {0: 0, 1: 1, 2: 2} and not outside.any():
            return raw.astype(np.int8, copy=False)
        lookup = np.full(high - low + 1, -1, np.int8)
        for value, class_id in self.classes.items():
            lookup[value - low] = class_id
        ids = lookup[np.clip(raw, low, high).astype(np.int64) - low]
        ids[outside] = -1
        if (ids < 0).any():
            unknown = np.unique(raw[ids < 0])[:5].tolist()
            known = ", ".join(f"{v}={CLASSES[k]}" for v, k in sorted(self.classes.items()))
            raise DataFileError(path, f"step {t}: mask values {unknown} are not classes "
                                      f"({known}, from {self.classes_from}); give --classes "
                                      "VALUE=CLASS,... (e.g. 1=atmospheric_river for a binary "
                                      "river mask, 3=background to ignore a value)")
        return ids

    def __len__(self):
        return len(self.steps)

    def chunks(self, jobs):
        """`[(start, stop), ...]`: `jobs` contiguous chunks of steps (fewer if steps are few)."""
        bounds = np.linspace(0, len(self), min(jobs, len(self)) + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class _Reader:
    """Reads masks step by step, keeping one file open."""

    def __init__(self, series):
        self.series, self._path, self._dataset = series, None, None

    def mask(self, index):
        path, name, t, _ = self.series.steps[index]
        if path != self._path:
            self.close()
            self._path, self._dataset = path, _open(path)
        time, lat, lon = self.series.dims[path]
        raw = np.asarray(self._dataset[name].isel({time: t}).transpose(lat, lon).values)
        return self.series.class_ids(raw, path, t)

    def close(self):
        if self._dataset is not None:
            self._dataset.close()
        self._path, self._dataset = None, None


def analyse_chunk(series, start, stop, min_area_km2=0.0, fields=None):
    """Objects, intensities, links and climatology of the steps `start` to `stop`.

    Args:
        series: the `Series`.
        start, stop: the chunk's steps, `range(start, stop)`.
        min_area_km2: smaller objects are dropped. Defaults to 0.
        fields: an `events.intensity.FieldSource`, or None for no intensities.

    Returns:
        `(steps, climatology)`: a list of `Step` and the chunk's `Climatology`
        (its `border_chains` hold the tracks that cross the chunk's borders).
    """
    from events.climatology import Climatology
    from events.objects import find_objects
    from events.tracks import link

    grid, reader = series.grid, _Reader(series)
    climatology = Climatology(grid)
    out, previous = [], None
    try:
        if start > 0:  # the step before the chunk, to link the chunk's first step
            objects, labels = find_objects(reader.mask(start - 1), grid,
                                           min_area_km2=min_area_km2)
            previous = (labels, {(o.class_id, o.label) for o in objects})
        for index in range(start, stop):
            mask = reader.mask(index)
            objects, labels = find_objects(mask, grid, min_area_km2=min_area_km2)
            kept = {(o.class_id, o.label) for o in objects}
            links = link(previous, (labels, kept)) if previous is not None else {}
            path, _, t, when = series.steps[index]
            intensity = fields.intensities(when, objects, labels, grid) if fields else None
            climatology.add(objects, labels, links, step=index)
            out.append(Step(index, when, path, t, objects, intensity, links))
            previous = (labels, kept)
    finally:
        reader.close()
        if fields:
            fields.close()
    climatology.finish(series_end=stop == len(series))
    return out, climatology


def stitch(series, parts):
    """Joins the chunks' results (in time order) into one series' tracks and climatology.

    Returns:
        `(steps, track_ids, climatology)`: every `Step`, the track id of
        each of its objects (lists, as the steps), and the whole `Climatology`.
    """
    from events.climatology import Climatology

    climatology = Climatology(series.grid)
    steps, track_ids, first_of = [], [], {}
    previous, next_track = {}, 1
    for part_steps, part_climatology in parts:
        climatology.merge(part_climatology)
        for step in part_steps:
            current, ids = {}, []
            for obj in step.objects:
                key = (obj.class_id, obj.label)
                parent = step.links.get(key)
                if parent is not None:
                    current[key] = previous[parent]
                else:
                    current[key] = next_track
                    next_track += 1
                ids.append(current[key])
                first_of[(step.index, *key)] = current[key]
            steps.append(step)
            track_ids.append(ids)
            previous = current
    crossing = collections.defaultdict(list)
    for _, part_climatology in parts:
        for chain, k, cells in part_climatology.border_chains:
            crossing[(first_of[chain], k)].append(cells)
    for (_, k), cells in sorted(crossing.items()):
        climatology.count_track(k, np.concatenate(cells))
    return steps, track_ids, climatology


def run_chunks(series, jobs=1, min_area_km2=0.0, fields=None):
    """`stitch` of `analyse_chunk` over `jobs` processes (in this process for 1)."""
    chunks = series.chunks(jobs)
    if len(chunks) == 1:
        parts = [analyse_chunk(series, *chunks[0], min_area_km2, fields)]
    else:
        # Fresh interpreters (spawn): netCDF/HDF5 state is not safe to fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(chunks), mp_context=context) as pool:
            futures = [pool.submit(analyse_chunk, series, a, b, min_area_km2, fields)
                       for a, b in chunks]
            parts = [f.result() for f in futures]
    return stitch(series, parts)


def track_id_planes(series, indices, ids_of, min_area_km2=0.0):
    """Yields `(index, mask, track ids (H, W) int32)` for the steps `indices`.

    `ids_of` maps `(step index, class, label)` to a track id, as `stitch`
    numbered them; labels are found again (`find_objects`) from the masks.
    """
    from events.objects import find_objects

    reader = _Reader(series)
    try:
        for index in indices:
            mask = reader.mask(index)
            objects, labels = find_objects(mask, series.grid, min_area_km2=min_area_km2)
            plane = np.zeros(series.grid.shape, np.int32)
            for obj in objects:
                plane[labels[obj.class_id] == obj.label] = ids_of[(index, obj.class_id,
                                                                    obj.label)]
            yield index, mask, plane
    finally:
        reader.close()


def write_track_ids(path, series, indices, ids_of, min_area_km2=0.0):
    """Writes the track id of every pixel of the steps `indices` as CF netCDF (`TRACK_ID`)."""
    import netCDF4

    grid = series.grid
    with written_atomically(path) as tmp, netCDF4.Dataset(tmp, "w") as out:
        out.Conventions = "CF-1.8"
        out.title = "Track of every event pixel (climseg-events)"
        out.history = "climseg-events --track-ids"
        out.createDimension("time", None)
        out.createDimension("lat", grid.shape[0])
        out.createDimension("lon", grid.shape[1])
        time = out.createVariable("time", "f8", ("time",))
        first = series.steps[indices[0]][3]
        calendar = getattr(first, "calendar", None)
        if calendar:
            time.units = f"hours since {first.strftime('%Y-%m-%d %H:%M:%S')}"
            time.calendar = calendar
        time.standard_name = "time"
        for name, values, standard, axis, units in (
                ("lat", grid.lat, "latitude", "Y", "degrees_north"),
                ("lon", grid.lon, "longitude", "X", "degrees_east")):
            var = out.createVariable(name, "f8", (name,), fill_value=False)
            var[:] = values
            var.setncatts({"units": units, "standard_name": standard, "long_name": standard,
                           "axis": axis})
        ids = out.createVariable("TRACK_ID", "i4", ("time", "lat", "lon"), zlib=True,
                                 complevel=1, chunksizes=(1, *grid.shape))
        ids.long_name = "track of the pixel's event (0: none)"
        ids.units = "1"
        for n, (index, _, plane) in enumerate(track_id_planes(series, indices, ids_of,
                                                              min_area_km2)):
            when = series.steps[index][3]
            time[n] = (when - first).total_seconds() / 3600.0 if calendar else index
            ids[n] = plane
    return path
