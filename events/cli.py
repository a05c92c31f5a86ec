"""`climseg-events`: objects and tracks of cyclones and rivers in mask files.

    climseg-events --input masks/ --output-dir events

    climseg-events --compare hist/events/climatology.nc ssp585/events/climatology.nc

Reads netCDF masks as `climseg-predict` writes them (`mask` on (time, lat,
lon)), or any netCDF class-id variable (`--variable LABELS`), many files in
time order forming one series. Writes `events.csv` (one row per object and
time step, with its track), `tracks.csv` (one row per track) and
`climatology.nc` (per class and cell: frequency, genesis and track counts):
objects are connected regions of a class that wrap in longitude, tracks
link them by overlap (see `events.tracks`). `--fields` adds intensities
from the input fields, `--track-ids` the track of every pixel, `--jobs N`
runs N processes over chunks of time. Objects and tracks are assigned to
the IPCC AR6 reference regions (`events.regions`; `regions.csv` counts
them per year; `--no-regions` skips it). `--truth` scores the tracks against
true ones (`events.score`). `--compare A B` prints how climatology B
differs from A.
"""

import argparse
import collections
import csv
import os
import sys

from data.errors import DEBUG_HELP, CommandError
from data.files import written_atomically
from data.flag_types import integer, number
from data.layouts import CLASSES
from data.model_output import NETCDF_SUFFIXES
from events.series import VARIABLES

CLASS_NAMES = dict(enumerate(CLASSES))  # the event classes: 1 and 2
EVENT_COLUMNS = ("track_id", "class", "time", "lat", "lon", "area_km2", "pixels", "lat_min",
                 "lat_max", "lon_min", "lon_max", "file", "time_index")
INTENSITY_COLUMNS = ("max_tmq", "max_wind_speed", "min_psl", "mean_prect")
TRACK_COLUMNS = ("track_id", "class", "start_time", "end_time", "steps", "lifetime_hours",
                 "genesis_lat", "genesis_lon", "termination_lat", "termination_lon",
                 "distance_km", "mean_speed_kmh", "max_area_km2", "genesis_observed",
                 "termination_observed")
TRACK_INTENSITY_COLUMNS = ("max_tmq", "max_wind_speed", "lmi_time", "min_psl",
                           "max_mean_prect")


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
    parser.add_argument("--classes", metavar="VALUE=CLASS,...",
                        help="what the mask's values are, e.g. 1=atmospheric_river for a binary "
                             "river mask; CLASS: tropical_cyclone (tc), atmospheric_river (ar) "
                             "or background (default: the variable's flag_values and "
                             "flag_meanings, else 1=tropical_cyclone,2=atmospheric_river, as "
                             "climseg and ClimateNet write masks)")
    parser.add_argument("--min-area-km2", type=number(minimum=0), default=0.0,
                        help="drop smaller objects")
    parser.add_argument("--fields", nargs="+", metavar="FILE",
                        help="the masks' input field files (netCDF, directories or globs), "
                             "found by time: per object max TMQ, max wind speed (U850/V850, "
                             "else UBOT/VBOT), min PSL, mean PRECT; per track their lifetime "
                             "extremes")
    parser.add_argument("--jobs", type=integer(minimum=1), default=1,
                        help="processes, each over a chunk of time steps (the same results "
                             "as one)")
    parser.add_argument("--no-regions", action="store_true",
                        help="do not assign objects and track geneses to the IPCC AR6 "
                             "reference regions (the region columns, regions.csv and the "
                             "region counts in climatology.nc)")
    parser.add_argument("--track-ids", action="store_true",
                        help="also write track_ids.nc: the track id of every event pixel")
    parser.add_argument("--figures", action="store_true",
                        help="also write frequency.png and genesis.png (maps with coastlines) "
                             "and lifetime.png and speed.png (histograms)")
    parser.add_argument("--frames", action="store_true",
                        help="also write frames/frame-NNNNN.png: each step's masks on TMQ "
                             "(from --fields) with its date, for a film")
    parser.add_argument("--truth", nargs="+", metavar="FILE",
                        help="sequence files with the true track of every pixel (TRACK_ID, "
                             "LABELS; climseg-synth --sequence): score the tracks (matched, "
                             "false alarms, misses per class) into score.csv and matches.csv")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def main(argv=None):
    """Runs the analysis; returns the process exit status (2: bad usage, 1: a failed run).

    Errors end as one line (`--debug` or CLIMSEG_DEBUG=1 shows the traceback).
    """
    from data.errors import run_command

    return run_command("climseg-events", _events, argv)


def _events(argv):
    from data.errors import write_failed

    try:
        return _run(argv)
    except OSError as e:  # a full disk, a directory that cannot be written
        raise write_failed(e) from e


def _run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.compare):
        parser.error("give --input (mask files to analyse) or --compare A B, one of them")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output-dir: {args.output_dir} is a file; expected a directory")
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
    classes = None
    if args.classes is not None:
        from events.series import parse_classes

        try:
            classes = parse_classes(args.classes)
        except ValueError as e:
            parser.error(f"--classes: {e}")
    flag, fields = "--input", None
    try:
        files = list_files(args.input, suffixes=NETCDF_SUFFIXES)
        flag = "--fields"
        fields = list_files(args.fields, suffixes=NETCDF_SUFFIXES) if args.fields else None
        flag = "--truth"
        truth = list_files(args.truth, suffixes=NETCDF_SUFFIXES) if args.truth else None
        flag = "--input"
        events, tracks, climatology, (series, ids_of) = analyse(
            files, variable=args.variable, min_area_km2=args.min_area_km2, fields=fields,
            jobs=args.jobs, classes=classes)
    except DataFileError as e:
        if fields and (e.path in fields or e.path == "--fields"):
            flag = "--fields"
        raise CommandError(f"{flag}: {e}", usage=True) from e
    if series.grid_note:
        print(f"climseg-events: note: {series.grid_note}", flush=True)
    regions, region_rows = (None, None) if args.no_regions else _regions(series, events, tracks)
    os.makedirs(args.output_dir, exist_ok=True)
    tables = {"events": (EVENT_COLUMNS + (("region",) if regions else ())
                         + (INTENSITY_COLUMNS if fields else ()), events, "object"),
              "tracks": (TRACK_COLUMNS + (("genesis_region",) if regions else ())
                         + (TRACK_INTENSITY_COLUMNS if fields else ()), tracks, "track")}
    for name, (columns, rows, dim) in tables.items():  # CSV and the same as a netCDF table
        _write_csv(os.path.join(args.output_dir, f"{name}.csv"), columns, rows)
        _write_table(os.path.join(args.output_dir, f"{name}.nc"), columns, rows, dim)
    path = os.path.join(args.output_dir, "climatology.nc")
    dataset = climatology.to_dataset({"input_files": len(files)})
    track_counts = collections.Counter(t["class"] for t in tracks)
    dataset = dataset.merge(_count_series(series, events, track_counts,
                                          list(dataset["event"].values)))
    written = ["events.csv", "events.nc", "tracks.csv", "tracks.nc"]
    if regions:
        from events.regions import COLUMNS as REGION_COLUMNS

        _write_csv(os.path.join(args.output_dir, "regions.csv"), REGION_COLUMNS, region_rows)
        dataset = dataset.merge(regions.to_dataset(region_rows), join="exact")
        written.append("regions.csv")
    dataset.attrs.setdefault("history", "climseg-events")
    encoding = {name: {"_FillValue": None} for name in ("lat", "lon", "year") if name in dataset}
    encoding["time"] = {"_FillValue": None, "dtype": "float64"}  # CF-1.8 has no int64
    with written_atomically(path) as tmp:
        dataset.to_netcdf(tmp, encoding=encoding)
    written.append("climatology.nc")
    if args.track_ids:
        from events.series import write_track_ids

        write_track_ids(os.path.join(args.output_dir, "track_ids.nc"), series,
                        range(len(series)), ids_of, args.min_area_km2)
        written.append("track_ids.nc")
    if args.figures:
        from events.figures import write_histograms, write_maps

        period = f"{series.steps[0][3]} to {series.steps[-1][3]}"
        written += [os.path.basename(p) for p in
                    write_maps(climatology.to_dataset(), args.output_dir, period)
                    + write_histograms(tracks, args.output_dir)]
    if args.frames:
        from events.figures import write_frames

        source = None
        if fields:
            from events.intensity import FieldSource

            source = FieldSource(fields, series.grid.lat, series.grid.lon)
        frames = write_frames(series, ids_of, os.path.join(args.output_dir, "frames"), source,
                              args.min_area_km2)
        written.append(f"{len(frames)} frames in frames/")
    scored = None
    if truth:
        scored = _score(truth, series, ids_of, args.min_area_km2, args.output_dir)
        written += ["score.csv", "matches.csv"]
    for name in CLASSES[1:]:
        line = f"{track_counts[name]} {name.replace('_', ' ')} tracks"
        if scored:
            r = scored[name]
            line += (f" found, {r['true_tracks']} true: {r['matched']} matched, "
                     f"{r['false_alarms']} false alarms, {r['misses']} misses "
                     f"(POD {r['pod']:.2f}, FAR {r['far']:.2f})")
        print(f"climseg-events: {line}", flush=True)
    print(f"climseg-events: {len(events)} objects, {len(tracks)} tracks; "
          f"{', '.join(written)} in {args.output_dir}", flush=True)
    return 0


def analyse(files, variable=None, min_area_km2=0.0, fields=None, jobs=1, classes=None):
    """Objects, tracks and climatology of a time series of mask files.

    Args:
        files: the mask files (netCDF), in any order.
        variable: the class-id variable. Defaults to the first of `VARIABLES` found.
        min_area_km2: smaller objects are dropped. Defaults to 0.
        fields: input field files (netCDF) for the intensities. Defaults to None.
        jobs: processes, each over a chunk of time steps. Defaults to `1`.
        classes: `{mask value: class id}`; defaults to the masks' flag meanings
            (see `events.series.Series`).

    Returns:
        `(events, tracks, climatology, (series, ids_of))`: lists of dicts with
        the columns of `EVENT_COLUMNS` and `TRACK_COLUMNS` (and the intensity
        columns with fields), the `events.Climatology`, and for per-step
        outputs the `events.series.Series` and the track id of every
        `(step, class, label)`.
    """
    from events.series import Series, run_chunks
    from events.tracks import summarize_tracks

    series = Series(files, variable, classes)
    source = None
    if fields:
        from events.intensity import FieldSource

        source = FieldSource(fields, series.grid.lat, series.grid.lon)
    steps, track_ids, climatology = run_chunks(series, jobs, min_area_km2, source)
    events, ids_of, origin = [], {}, series.steps[0][3]
    for step, ids in zip(steps, track_ids, strict=True):
        hours = _hours(step.time, origin)
        intensity = step.intensity or [{}] * len(ids)
        for o, track_id, values in zip(step.objects, ids, intensity, strict=True):
            ids_of[(step.index, o.class_id, o.label)] = track_id
            events.append({
                "track_id": track_id, "class": CLASS_NAMES[o.class_id],
                "time": str(step.time), "hours": hours, "lat": o.lat, "lon": o.lon,
                "area_km2": o.area_km2, "pixels": o.pixels, "lat_min": o.lat_min,
                "lat_max": o.lat_max, "lon_min": o.lon_min, "lon_max": o.lon_max,
                "file": os.path.basename(step.path), "time_index": step.time_index, **values})
    tracks = summarize_tracks(events, first_time=str(series.steps[0][3]),
                              last_time=str(series.steps[-1][3]))
    return events, tracks, climatology, (series, ids_of)


def _score(truth, series, ids_of, min_area_km2, output_dir):
    """Scores the tracks against `--truth`, writes score.csv and matches.csv; by class."""
    from data.errors import DataFileError
    from events.score import MATCH_COLUMNS, SUMMARY_COLUMNS, TrackScore

    try:
        score = TrackScore.from_series(series, ids_of, truth, min_area_km2)
    except DataFileError as e:
        raise CommandError(f"--truth: {e}", usage=True) from e
    summary = score.summary()
    _write_csv(os.path.join(output_dir, "score.csv"), SUMMARY_COLUMNS, summary)
    _write_csv(os.path.join(output_dir, "matches.csv"), MATCH_COLUMNS, score.match_rows())
    return {row["class"]: row for row in summary}


def _regions(series, events, tracks):
    """Assigns the rows to AR6 regions; `(events.regions.AR6Regions, regions.csv rows)`."""
    from events.regions import AR6Regions

    try:
        regions = AR6Regions(series.grid.lat, series.grid.lon)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from e
    regions.assign(events, tracks)
    return regions, regions.count(events, tracks, [when for *_, when in series.steps])


def _hours(when, origin):
    try:
        return (when - origin).total_seconds() / 3600.0
    except (TypeError, AttributeError):  # plain numbers: steps
        return float(when - origin)


def _count_series(series, events, track_counts, classes):
    """`object_count` (event, time): the objects of each class at every time step;
    `track_total` (event): the tracks of each class (`track_counts`, by class name)."""
    import numpy as np
    import xarray as xr

    step_of = {str(when): i for i, (*_, when) in enumerate(series.steps)}
    counts = np.zeros((len(series.steps), len(classes)), np.int32)
    for row in events:
        counts[step_of[str(row["time"])], classes.index(row["class"])] += 1
    times = [when for *_, when in series.steps]
    totals = np.array([track_counts[name] for name in classes], np.int32)
    return xr.Dataset(
        {"object_count": (("event", "time"), counts.T, {
            "long_name": "objects of the class at the time step", "units": "1"}),
         "track_total": (("event",), totals, {
             "long_name": "tracks of the class in the series", "units": "1"})},
        coords={"time": ("time", times, {"standard_name": "time", "axis": "T"})})


def _write_table(path, columns, rows, dim):
    """The rows as a netCDF table: one variable per column on dimension `dim`."""
    import numbers

    import numpy as np
    import xarray as xr

    variables = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                           for v in present):
            integral = len(present) == len(values) and all(
                isinstance(v, numbers.Integral) for v in present)
            array = np.array([np.nan if v is None else v for v in values],
                             np.int64 if integral else np.float64)
        else:
            array = np.array(["" if v is None else str(v) for v in values], dtype=object) \
                if values else np.array([], dtype="U1")
        variables[column] = (dim, array)
    dataset = xr.Dataset(variables, attrs={
        "title": f"climseg-events: one row per {dim}", "history": "climseg-events"})
    with written_atomically(path) as tmp:
        dataset.to_netcdf(tmp)


def _write_csv(path, columns, rows):
    with written_atomically(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


if __name__ == "__main__":
    sys.exit(main())
