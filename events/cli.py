"""`climseg-events`: objects and tracks of cyclones and rivers in mask files.

    climseg-events --input masks/ --output-dir events

    climseg-events --compare hist/events/climatology.nc ssp585/events/climatology.nc

Reads netCDF masks as `climseg-predict` writes them (`mask` on (time, lat,
lon)), or any netCDF class-id variable (`--variable LABELS`), many files in
time order forming one series. Writes `events.csv` (one row per object and
time step, with its track), `tracks.csv` (one row per track) and
`climatology.nc` (per class and cell: frequency, genesis and track counts):
objects are connected regions of a class that wrap in longitude, tracks
link them by overlap (see `events.tracks`). `--compare A B` prints how
climatology B differs from A.
"""

import argparse
import csv
import os
import sys

from data.flag_types import number
from data.layouts import CLASSES
from data.model_output import NETCDF_SUFFIXES

VARIABLES = ("mask", "PREDICTED_LABELS", "LABELS")
CLASS_NAMES = dict(enumerate(CLASSES))  # the event classes: 1 and 2
EVENT_COLUMNS = ("track_id", "class", "time", "lat", "lon", "area_km2", "pixels", "lat_min",
                 "lat_max", "lon_min", "lon_max", "file", "time_index")
TRACK_COLUMNS = ("track_id", "class", "start_time", "end_time", "steps", "lifetime_hours",
                 "genesis_lat", "genesis_lon", "termination_lat", "termination_lon",
                 "distance_km", "mean_speed_kmh", "max_area_km2")


def build_parser():
    parser = argparse.ArgumentParser(prog="climseg-events", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", nargs="+",
                        help="mask files (netCDF), directories or globs: one time series")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="two climatology.nc files: print how B differs from A")
    parser.add_argument("--output-dir", default="events")
    parser.add_argument("--variable", help=f"the class-id variable (default: the first of "
                                           f"{', '.join(VARIABLES)} in the files)")
    parser.add_argument("--min-area-km2", type=number(minimum=0), default=0.0,
                        help="drop smaller objects")
    return parser


def main(argv=None):
    """Runs the analysis; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.compare):
        parser.error("give --input (mask files to analyse) or --compare A B, one of them")
    from data.errors import DataFileError
    from data.files import list_files

    if args.compare:
        from events.climatology import compare

        for path in args.compare:
            if not os.path.isfile(path):
                parser.error(f"--compare: {path} does not exist")
        for line in compare(*args.compare):
            print(f"climseg-events: {line}", flush=True)
        return 0
    try:
        files = list_files(args.input, suffixes=NETCDF_SUFFIXES)
        events, tracks, climatology = analyse(files, variable=args.variable,
                                              min_area_km2=args.min_area_km2)
    except DataFileError as e:
        raise SystemExit(f"climseg-events: error: --input: {e}") from None
    os.makedirs(args.output_dir, exist_ok=True)
    _write_csv(os.path.join(args.output_dir, "events.csv"), EVENT_COLUMNS, events)
    _write_csv(os.path.join(args.output_dir, "tracks.csv"), TRACK_COLUMNS, tracks)
    path = os.path.join(args.output_dir, "climatology.nc")
    climatology.to_dataset({"input_files": len(files)}).to_netcdf(f"{path}.tmp")
    os.replace(f"{path}.tmp", path)
    for name in CLASSES[1:]:
        count = sum(t["class"] == name for t in tracks)
        print(f"climseg-events: {count} {name.replace('_', ' ')} tracks", flush=True)
    print(f"climseg-events: {len(events)} objects, {len(tracks)} tracks; events.csv, "
          f"tracks.csv and climatology.nc in {args.output_dir}", flush=True)
    return 0


def analyse(files, variable=None, min_area_km2=0.0):
    """Objects, tracks and climatology of a time series of mask files.

    Returns:
        `(events, tracks, climatology)`: lists of dicts with the columns of
        `EVENT_COLUMNS` and `TRACK_COLUMNS`, and an `events.Climatology`.
    """
    import numpy as np

    from events.climatology import Climatology
    from events.objects import Grid, find_objects
    from events.tracks import Tracker, summarize_tracks

    series = []
    tracker, events, origin, grid = Tracker(), [], None, None
    try:
        for path in files:
            series.append(_open(path, variable))
            if not series[-1][2]:
                raise _error(path, "holds no time steps")
        try:
            series.sort(key=lambda s: s[2][0])
        except TypeError:
            raise _error(files[0], "the files' times cannot be ordered (a time axis in some "
                                   "files only, or different calendars)") from None
        for path, dataset, times, name in series:
            lat, lon = dataset[dataset[name].dims[1]].values, dataset[dataset[name].dims[2]].values
            if grid is None:
                grid = Grid(lat, lon)
                climatology = Climatology(grid)
            elif grid.shape != (len(lat), len(lon)) or not (
                    np.allclose(lat, grid.lat) and np.allclose(lon, grid.lon)):
                raise _error(path, f"grid is {len(lat)}x{len(lon)} from {lat[0]:g},{lon[0]:g}, "
                                   f"but the first file's is {grid.shape[0]}x{grid.shape[1]} "
                                   f"from {grid.lat[0]:g},{grid.lon[0]:g}")
            for t, when in enumerate(times):
                mask = np.asarray(dataset[name].isel({dataset[name].dims[0]: t}).values)
                objects, labels = find_objects(mask, grid, min_area_km2=min_area_km2)
                ids = tracker.add(objects, labels)
                climatology.add(objects, labels, ids)
                origin = when if origin is None else origin
                hours = _hours(when, origin)
                for o, track_id in zip(objects, ids, strict=True):
                    events.append({
                        "track_id": track_id, "class": CLASS_NAMES[o.class_id],
                        "time": str(when), "hours": hours, "lat": o.lat, "lon": o.lon,
                        "area_km2": o.area_km2, "pixels": o.pixels, "lat_min": o.lat_min,
                        "lat_max": o.lat_max, "lon_min": o.lon_min, "lon_max": o.lon_max,
                        "file": os.path.basename(path), "time_index": t})
    finally:
        for _, dataset, _, _ in series:
            dataset.close()
    if grid is None:
        raise _error(files[0] if files else "--input", "holds no time steps")
    climatology.finish()
    return events, summarize_tracks(events), climatology


def _error(path, problem):
    from data.errors import DataFileError

    return DataFileError(path, problem)


def _open(path, variable):
    """`(path, dataset, times, variable name)` of one mask file, checked."""
    import xarray as xr

    try:
        dataset = xr.open_dataset(path, use_cftime=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise _error(path, f"cannot be read as netCDF: {' '.join(str(e).split())[:200]}") \
            from None
    names = [variable] if variable else [v for v in VARIABLES if v in dataset.variables]
    if not names or names[0] not in dataset.variables:
        found = ", ".join(sorted(dataset.data_vars)) or "no variables"
        dataset.close()
        raise _error(path, f"has no {' or '.join([variable] if variable else VARIABLES)}; "
                           f"found {found}; name the mask variable with --variable")
    name = names[0]
    dims = dataset[name].dims
    if len(dims) != 3:
        dataset.close()
        raise _error(path, f"{name} has dimensions {dims}; expected (time, lat, lon)")
    times = list(dataset[dims[0]].values) if dims[0] in dataset.variables \
        else list(range(dataset.sizes[dims[0]]))
    return path, dataset, times, name


def _hours(when, origin):
    try:
        return (when - origin).total_seconds() / 3600.0
    except (TypeError, AttributeError):  # plain numbers: steps
        return float(when - origin)


def _write_csv(path, columns, rows):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
