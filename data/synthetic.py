"""Synthetic CAM5-like samples: fields with cyclones and rivers, labels by threshold rules.

Real CAM5 data (~55 MB a sample, terabytes in all) cannot be downloaded here.
This generator writes files in the DeepCAM layout (see docs/DATA.md)
whose 16 channels have plausible ranges and smooth large-scale structure
(zonal-mean climatology plus smooth noise), with two kinds of events added:

- Tropical cyclones: warm-core vortices between 8 and 28 degrees latitude, a
  Gaussian pressure minimum in PSL/PS (and Z1000), cyclonic winds (counter-
  clockwise in the north, clockwise in the south) in U850/V850/UBOT/VBOT,
  extra moisture (TMQ, QREFHT) and rain (PRECT) near the centre, warm
  T500/T200.
- Atmospheric rivers: long (40-70 degrees), narrow, curved filaments from the
  subtropics to mid-latitudes, poleward and eastward, of high TMQ carried by
  strong winds along the filament.

Labels are then computed from the generated fields alone by threshold rules,
as TECA's were, so the inputs determine the labels:

- tropical cyclone: PSL below a threshold where TMQ is high;
- atmospheric river: moisture transport TMQ * |(U850, V850)| above a
  threshold, with TMQ high enough, away from a cyclone's low (PSL and TMQ).

`labels_0` and `labels_1` use two sets of thresholds, like the two label sets
of the published data.
"""

import argparse
import concurrent.futures
import datetime
import io
import os
import sys

import h5py
import numpy as np

from data.files import written_atomically
from data.flag_types import integer
from data.layouts import CHANNELS, regular_grid
from data.progress import Progress
from data.stats import compute_stats, write_stats

FULL_SIZE = (768, 1152)
_C = {name: i for i, name in enumerate(CHANNELS)}
_AIR_DENSITY_G = 1.2 * 9.81  # Pa per metre of height near the surface.

# (PSL below, TMQ above) for cyclones; (transport above, TMQ above) for rivers;
# (PSL below, TMQ above) of a cyclone's low, where no river is labelled.
_RULES = {
    "labels_0": dict(tc_psl=99200.0, tc_tmq=35.0, ar_ivt=700.0, ar_tmq=22.0,
                     low_psl=100300.0, low_tmq=35.0),
    "labels_1": dict(tc_psl=99600.0, tc_tmq=30.0, ar_ivt=600.0, ar_tmq=20.0,
                     low_psl=100500.0, low_tmq=30.0),
}


def synthesize_sample(rng, height=FULL_SIZE[0], width=FULL_SIZE[1]):
    """Draws one sample: 16 fields and their labels.

    Args:
        rng: a `numpy.random.Generator`; the sample is a function of its state.
        height: latitudes, from south to north. Defaults to `768`.
        width: longitudes, from 0 eastward. Defaults to `1152`.

    Returns:
        `(data, labels)`: float32 (height, width, 16) in `CHANNELS` order, and
        a dict `{"labels_0": ..., "labels_1": ...}` of int32 (height, width)
        class ids (0 background, 1 tropical cyclone, 2 atmospheric river).
    """
    if height < 16 or width < 16:
        raise ValueError(f"height={height}, width={width}; expected at least 16 each")
    lat, lon = regular_grid(height, width)
    f = _background(rng, lat, lon)
    for _ in range(rng.integers(2, 7)):
        _add_cyclone(rng, f, lat, lon)
    for _ in range(rng.integers(3, 7)):
        _add_river(rng, f, lat, lon)
    _derive(f)
    data = np.stack([f[name] for name in CHANNELS], axis=-1).astype(np.float32)
    return data, {name: label_fields(f, **rule) for name, rule in _RULES.items()}


def label_fields(fields, *, tc_psl, tc_tmq, ar_ivt, ar_tmq, low_psl, low_tmq):
    """The threshold rules: class ids from PSL, TMQ, U850 and V850.

    Args:
        fields: a dict of (H, W) arrays by channel name, or an (H, W, 16) array.
        tc_psl, tc_tmq: a cyclone pixel has PSL < tc_psl (Pa) and TMQ > tc_tmq (kg m-2).
        ar_ivt, ar_tmq: a river pixel has TMQ * wind speed at 850 hPa > ar_ivt
            (kg m-1 s-1) and TMQ > ar_tmq,
        low_psl, low_tmq: and is not in a cyclone's low (PSL < low_psl and
            TMQ > low_tmq), where winds are strong but no river is.

    Returns:
        int32 (H, W) class ids.
    """
    if isinstance(fields, np.ndarray):
        fields = {name: fields[..., i] for i, name in enumerate(CHANNELS)}
    tmq, psl = fields["TMQ"], fields["PSL"]
    ivt = tmq * np.hypot(fields["U850"], fields["V850"])
    tc = (psl < tc_psl) & (tmq > tc_tmq)
    ar = (ivt > ar_ivt) & (tmq > ar_tmq) & ~((psl < low_psl) & (tmq > low_tmq))
    return np.where(tc, 1, np.where(ar, 2, 0)).astype(np.int32)


def file_name(index, run=1):
    """`data-YYYY-MM-DD-TT-R.h5` for the `index`-th 3-hourly step from 2106-01-01."""
    when = datetime.datetime(2106, 1, 1) + datetime.timedelta(hours=3 * index)
    return f"data-{when:%Y-%m-%d-%H}-{run}.h5"


def write_sample(path, data, labels):
    """Writes one sample in the DeepCAM layout, contiguous and uncompressed like the originals.

    HDF5 builds the file in memory and one plain write puts it on disk: a
    full disk fails that write (an OSError naming the file), never one of
    HDF5's, whose clean-up after a failed write crashed the process once.
    """
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.create_dataset("climate/data", data=data)
        for name, value in labels.items():
            f.create_dataset(f"climate/{name}", data=value)
        f["climate"].attrs["channels"] = ",".join(CHANNELS)
    with written_atomically(path) as tmp, open(tmp, "wb") as out:
        out.write(image.getbuffer())


def generate(out_dir, num_files, height=FULL_SIZE[0], width=FULL_SIZE[1], seed=0, *,
             stats=True, workers=1, progress=False):
    """Writes `num_files` synthetic samples and their `stats.h5` to `out_dir`.

    File `i` depends only on `(seed, i)`: the same seed gives the same files,
    whatever `num_files` or `workers`.

    Args:
        out_dir: directory to write to (created if needed).
        num_files: number of samples.
        height: grid latitudes. Defaults to `768` (the CAM5 0.25-degree grid);
            e.g. 96 for tests.
        width: grid longitudes. Defaults to `1152`; e.g. 144 for tests.
        seed: random seed. Defaults to `0`.
        stats: also compute and write `out_dir/stats.h5`. Defaults to True.
        workers: samples generated in parallel (threads). Defaults to `1`.
        progress: print progress to stderr. Defaults to False.

    Returns:
        The sorted list of sample paths written.

    Example:

    >>> paths = generate("/tmp/synth", 8, height=96, width=144, seed=1)
    >>> os.path.basename(paths[0])
    'data-2106-01-01-00-1.h5'
    """
    if not (isinstance(num_files, (int, np.integer)) and num_files >= 1):
        raise ValueError(f"num_files={num_files!r}; expected an integer >= 1")
    os.makedirs(out_dir, exist_ok=True)
    meter = Progress(num_files, "climseg-synth", enabled=progress)

    def one(index):
        data, labels = synthesize_sample(np.random.default_rng([seed, index]), height, width)
        path = os.path.join(out_dir, file_name(index))
        write_sample(path, data, labels)
        return path

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        paths = []
        for path in pool.map(one, range(num_files)):
            paths.append(path)
            meter.update(1, os.path.getsize(path))
    meter.close()
    if stats:
        write_stats(os.path.join(out_dir, "stats.h5"),
                    compute_stats(paths, workers=workers, progress=progress))
    return paths


def main(argv=None):
    """`climseg-synth OUT_DIR -n N`: writes synthetic CAM5 samples and stats.h5.

    Errors end as one line (`--debug` or CLIMSEG_DEBUG=1 shows the traceback);
    exit status 2 for bad usage, 1 for a failed run (e.g. a full disk).
    """
    from data.errors import run_command

    return run_command("climseg-synth", _synth, argv)


def _synth(argv):
    from data.errors import DEBUG_HELP, write_failed

    parser = argparse.ArgumentParser(
        prog="climseg-synth",
        description="Write synthetic CAM5-like samples (DeepCAM layout, with tropical "
                    "cyclones and atmospheric rivers) and their stats.h5.")
    parser.add_argument("out_dir")
    parser.add_argument("-n", "--num-files", type=integer(minimum=1), required=True,
                        help="samples (with --sequence: time steps)")
    parser.add_argument("--height", type=integer(minimum=1), default=FULL_SIZE[0],
                        help=f"latitudes (default {FULL_SIZE[0]}; e.g. 96 for a small set)")
    parser.add_argument("--width", type=integer(minimum=1), default=FULL_SIZE[1],
                        help=f"longitudes (default {FULL_SIZE[1]}; e.g. 144)")
    parser.add_argument("--seed", type=integer(minimum=0), default=0)
    parser.add_argument("--workers", type=integer(minimum=1), default=min(4, os.cpu_count() or 1))
    parser.add_argument("--no-stats", action="store_true", help="do not write stats.h5")
    parser.add_argument("--validation", type=integer(minimum=1), metavar="M",
                        help="DeepCAM's directory layout: N files in OUT_DIR/train, M in "
                             "OUT_DIR/validation and the training files' OUT_DIR/stats.h5, "
                             "as DeepCAM's own loader expects")
    parser.add_argument("--sequence", action="store_true",
                        help="a time series instead (data.sequence): N 3-hourly steps as CF "
                             "netCDF with the 16 fields, LABELS and the true TRACK_ID of every "
                             "labelled pixel; cyclones and rivers travel and decay")
    parser.add_argument("--steps-per-file", type=integer(minimum=1), default=8,
                        help="with --sequence: time steps in each file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"out_dir: {args.out_dir} is a file; expected a directory")
    if args.sequence and args.validation is not None:
        parser.error("--sequence writes one time series; --validation is for samples")
    try:
        if args.sequence:
            from data.sequence import generate_sequence

            paths = generate_sequence(args.out_dir, args.num_files, args.height, args.width,
                                      args.seed, args.steps_per_file, progress=not args.quiet)
        elif args.validation is None:
            paths = generate(args.out_dir, args.num_files, args.height, args.width, args.seed,
                             stats=not args.no_stats, workers=args.workers,
                             progress=not args.quiet)
        else:
            paths = generate_deepcam_layout(args.out_dir, args.num_files, args.validation,
                                            args.height, args.width, args.seed,
                                            stats=not args.no_stats, workers=args.workers,
                                            progress=not args.quiet)
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:  # a full disk, a directory that cannot be written
        raise write_failed(err, f"cannot write {err.filename or args.out_dir}") from err
    print(f"climseg-synth: wrote {len(paths)} files to {args.out_dir}", file=sys.stderr)
    return 0


def generate_deepcam_layout(root, num_train, num_validation, height=FULL_SIZE[0],
                            width=FULL_SIZE[1], seed=0, stats=True, workers=1, progress=False):
    """Writes a data set in DeepCAM's layout: `root/train`, `root/validation`, `root/stats.h5`.

    The statistics are the training files'; training and validation files
    are drawn from different seeds.

    Returns:
        The paths written, training files first.
    """
    train = generate(os.path.join(root, "train"), num_train, height, width, seed, stats=False,
                     workers=workers, progress=progress)
    validation = generate(os.path.join(root, "validation"), num_validation, height, width,
                          seed + 1_000_003, stats=False, workers=workers, progress=progress)
    if stats:
        write_stats(os.path.join(root, "stats.h5"), compute_stats(train, workers=workers))
    return train + validation


NOISE_CELLS = (8, 6, 9)
"""The background's coarse noise: 8 fields of 6 x 9 cells, smoothly interpolated."""


def _smooth_noise(coarse, lat, lon):
    """Smooth unit-variance random fields: `coarse` (count, rows, cols) noise, interpolated."""
    cells = coarse.shape[1:]
    rows = _interpolation(np.clip((lat + 90.0) / 180.0 * cells[0] - 0.5, 0, cells[0] - 1),
                          cells[0], periodic=False)
    cols = _interpolation(lon / 360.0 * cells[1], cells[1], periodic=True)
    fields = np.einsum("hi,kij,wj->khw", rows, coarse, cols, optimize=True)
    # The spread from a subsample: a full-grid std costs as much as the rest.
    return fields / fields[:, ::4, ::4].std(axis=(1, 2), keepdims=True)


def _interpolation(position, cells, periodic):
    """Matrix mapping `cells` coarse values to points at fractional `position`s."""
    low = np.floor(position).astype(int)
    frac = position - low
    frac = (1 - np.cos(np.pi * frac)) / 2  # Smooth (C1) instead of piecewise linear.
    high = (low + 1) % cells if periodic else np.minimum(low + 1, cells - 1)
    low = low % cells
    matrix = np.zeros((len(position), cells))
    np.add.at(matrix, (np.arange(len(position)), low), 1 - frac)
    np.add.at(matrix, (np.arange(len(position)), high), frac)
    return matrix


def _background(rng, lat, lon, coarse=None):
    """Zonal-mean climatology plus smooth weather-scale noise, as float64 (H, W) fields.

    `coarse` is the noise's (8, 6, 9) coarse cells; drawn from `rng` when None.
    """
    phi = lat[:, None]
    s2 = np.sin(np.radians(phi)) ** 2
    if coarse is None:
        coarse = rng.standard_normal(NOISE_CELLS)
    n = dict(zip("tpuvqrab", _smooth_noise(coarse, lat, lon), strict=True))
    shape = (len(lat), len(lon))
    f = {}
    f["TS"] = 301.0 - 50.0 * s2 + 2.5 * n["t"]
    f["T500"] = 268.0 - 28.0 * s2 + 2.0 * n["t"]
    f["T200"] = 218.0 + 4.0 * s2 + 1.5 * n["a"]
    f["PSL"] = (101200.0 + 900.0 * np.exp(-(((np.abs(phi) - 30.0) / 10.0) ** 2))
                - 1000.0 * np.exp(-(((np.abs(phi) - 62.0) / 10.0) ** 2)) + 400.0 * n["p"])
    f["U850"] = (13.0 * np.exp(-(((np.abs(phi) - 45.0) / 12.0) ** 2))
                 - 6.0 * np.exp(-((phi / 14.0) ** 2)) + 3.0 * n["u"])
    f["V850"] = 2.5 * n["v"] * np.ones(shape)
    f["TMQ"] = (4.0 + 48.0 * np.exp(-((phi / 24.0) ** 2))) * np.exp(0.1 * n["q"])
    f["PRECT"] = 2e-8 * (f["TMQ"] / 50.0) ** 3 * np.exp(0.5 * n["r"])
    f["Z200"] = 12300.0 - 1400.0 * s2 + 60.0 * n["t"]
    f["_noise_b"] = n["b"]
    return f


def _window(lat, lon, lat_range, lon_range):
    """Row and (wrapped) column indices of the grid points in a lat/lon box."""
    rows = np.flatnonzero((lat >= lat_range[0]) & (lat <= lat_range[1]))
    span = lon_range[1] - lon_range[0]
    if span >= 360.0:
        return rows, np.arange(len(lon))
    cols = np.flatnonzero((lon - lon_range[0]) % 360.0 <= span)
    return rows, cols


def _distance(lat, lon, lat0, lon0):
    """East and north distances in degrees (of latitude) on the grid, longitude periodic."""
    dlon = (lon[None, :] - lon0 + 180.0) % 360.0 - 180.0
    dx = dlon * np.cos(np.radians(lat[:, None]))
    dy = lat[:, None] - lat0
    return dx, dy


def _lon_margin(margin, lat_max):
    """Degrees of longitude spanning `margin` degrees of distance up to `lat_max`."""
    return margin / max(np.cos(np.radians(min(abs(lat_max), 89.0))), 1e-3)


def _add_cyclone(rng, f, lat, lon):
    hemisphere = rng.choice([-1.0, 1.0])
    lat0 = hemisphere * rng.uniform(8.0, 28.0)
    lon0 = rng.uniform(0.0, 360.0)
    depth = rng.uniform(3500.0, 9000.0)  # Central pressure deficit, Pa.
    radius = rng.uniform(3.5, 4.5)  # e-folding radius of the low, degrees.
    wind_radius = rng.uniform(1.2, 2.0)  # Radius of maximum wind.
    extras = [rng.uniform(*bounds) for bounds in _CYCLONE_EXTRAS]
    cyclone(f, lat, lon, hemisphere, lat0, lon0, depth, radius, wind_radius, *extras)


# The ranges of a cyclone's moisture (kg m-2), rain (m s-1), warm core at 500 and
# 200 hPa (K) and 200 hPa height (m) at its centre.
_CYCLONE_EXTRAS = ((20.0, 30.0), (3e-6, 8e-6), (3.0, 8.0), (1.0, 3.0), (40.0, 100.0))


def cyclone(f, lat, lon, hemisphere, lat0, lon0, depth, radius, wind_radius, tmq, prect,
            t500, t200, z200):
    """Adds one cyclone centred at (lat0, lon0) to the fields `f`, in place.

    Returns:
        `(box, r)`: the index box it changed and the distance of its points
        from the centre in degrees.
    """
    vmax = 20.0 + depth / 200.0
    # Work in a box of 5 radii around the centre; beyond it every term is ~0.
    reach = 5.0 * radius
    rows, cols = _window(lat, lon, (lat0 - reach, lat0 + reach),
                         (lon0 - _lon_margin(reach, abs(lat0) + reach),
                          lon0 + _lon_margin(reach, abs(lat0) + reach)))
    box = np.ix_(rows, cols)
    dx, dy = _distance(lat[rows], lon[cols], lat0, lon0)
    r = np.hypot(dx, dy)
    core = np.exp(-((r / radius) ** 2))
    f["PSL"][box] -= depth * core
    # Cyclonic: counter-clockwise in the north, clockwise in the south.
    speed = vmax * (r / wind_radius) * np.exp(0.5 * (1.0 - (r / wind_radius) ** 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        tangent_u = np.where(r > 0, -dy / r, 0.0)
        tangent_v = np.where(r > 0, dx / r, 0.0)
    f["U850"][box] += hemisphere * speed * tangent_u
    f["V850"][box] += hemisphere * speed * tangent_v
    f["TMQ"][box] += tmq * core
    f["PRECT"][box] += prect * np.exp(-((r / (0.7 * radius)) ** 2))
    f["T500"][box] += t500 * core  # Warm core.
    f["T200"][box] += t200 * core
    f["Z200"][box] += z200 * core
    return box, r


def _add_river(rng, f, lat, lon):
    hemisphere = rng.choice([-1.0, 1.0])
    lat0 = rng.uniform(10.0, 22.0)
    lat1 = lat0 + rng.uniform(25.0, 40.0)
    lon0 = rng.uniform(0.0, 360.0)
    lon1 = lon0 + rng.uniform(20.0, 50.0)
    bend = rng.uniform(-0.3, 0.3)
    width = rng.uniform(3.0, 4.5)
    speed, tmq, prect = (rng.uniform(18.0, 28.0), rng.uniform(18.0, 28.0),
                         rng.uniform(5e-7, 2e-6))
    river(f, lat, lon, hemisphere, lat0, lat1, lon0, lon1, bend, width, speed, tmq, prect)


def river(f, lat, lon, hemisphere, lat0, lat1, lon0, lon1, bend, width, speed, tmq, prect):
    """Adds one river from (lat0, lon0) to (lat1, lon1) to the fields `f`, in place.

    Latitudes are the distances from the equator; `hemisphere` (+1 or -1)
    places the river. Returns `(box, d, fade)`: the index box it changed, the
    distance of its points from the river's axis in degrees, and how far
    each is from the river's tips (0 beyond them, 1 in its middle part).
    """
    # A quadratic Bezier curve bent sideways, sampled about every degree.
    mid = np.array([(lat0 + lat1) / 2 - bend * (lon1 - lon0),
                    (lon0 + lon1) / 2 + bend * (lat1 - lat0)])
    t = np.linspace(0.0, 1.0, 48)[:, None]
    curve = ((1 - t) ** 2 * np.array([lat0, lon0]) + 2 * t * (1 - t) * mid
             + t**2 * np.array([lat1, lon1]))
    tangent = np.gradient(curve, axis=0)
    curve[:, 0] *= hemisphere
    tangent[:, 0] *= hemisphere
    reach = 4.0 * width
    margin = _lon_margin(reach, np.abs(curve[:, 0]).max() + reach)
    rows, cols = _window(lat, lon, (curve[:, 0].min() - reach, curve[:, 0].max() + reach),
                         (curve[:, 1].min() - margin, curve[:, 1].max() + margin))
    box = np.ix_(rows, cols)
    sub_lat = lat[rows]
    # Nearest curve point for every grid point of the box.
    dlon = (lon[None, None, cols] - curve[:, 1, None, None] + 180.0) % 360.0 - 180.0
    dx = dlon * np.cos(np.radians(sub_lat[None, :, None]))
    dy = sub_lat[None, :, None] - curve[:, 0, None, None]
    dist2 = dx**2 + dy**2
    nearest = dist2.argmin(axis=0)
    d = np.sqrt(np.take_along_axis(dist2, nearest[None], axis=0)[0])
    # Fade in and out at the ends, so the river has tips, not cut edges.
    along = t[nearest, 0]
    fade = np.clip(np.minimum(along, 1 - along) / 0.1, 0, 1)
    profile = np.exp(-((d / width) ** 2)) * fade
    direction = tangent[nearest]
    east = direction[..., 1] * np.cos(np.radians(sub_lat))[:, None]
    norm = np.hypot(east, direction[..., 0])
    east = east / norm
    north = direction[..., 0] / norm
    wind = speed * np.exp(-((d / (1.3 * width)) ** 2)) * fade
    f["TMQ"][box] += tmq * profile
    f["U850"][box] += wind * east
    f["V850"][box] += wind * north
    f["PRECT"][box] += prect * profile * along
    return box, d, fade


def _derive(f):
    """Fields that follow from the others: surface winds, humidity, pressure, heights."""
    noise = f.pop("_noise_b")
    f["UBOT"] = 0.75 * f["U850"] + 0.8 * noise
    f["VBOT"] = 0.75 * f["V850"] - 0.8 * noise
    f["TREFHT"] = f["TS"] - 1.0 + 0.5 * noise
    f["QREFHT"] = 3.6e-4 * f["TMQ"] * (1.0 + 0.05 * noise)
    f["PS"] = f["PSL"] - 150.0 - 100.0 * noise
    f["Z1000"] = (f["PSL"] - 100000.0) / _AIR_DENSITY_G
    f["ZBOT"] = 62.0 + 0.21 * (f["TREFHT"] - 288.0)


DEFAULT_SET = {"height": 64, "width": 96, "train": 48, "val": 16, "seed": 2018}
"""The small data set training uses when given no files: its grid, file counts and seed."""


def default_dataset(cache_dir, rank=0, say=print):
    """The default synthetic data set: generated once (by rank 0) into `cache_dir`.

    Every rank calls it; the others wait until rank 0's files are there.

    Returns:
        `(train_dir, val_dir)`.
    """
    import climseg_tf

    d = DEFAULT_SET
    root = os.path.join(cache_dir, f"synthetic-{d['height']}x{d['width']}-seed{d['seed']}")
    dirs = {split: os.path.join(root, split) for split in ("train", "val")}
    if rank == 0:
        for offset, split in enumerate(("train", "val")):
            marker = os.path.join(dirs[split], ".complete")
            if os.path.exists(marker):
                say(f"using the synthetic data set in {dirs[split]}")
                continue
            say(f"generating the default synthetic data set ({d[split]} {split} files, "
                f"{d['height']}x{d['width']}x16) in {dirs[split]}")
            generate(dirs[split], d[split], d["height"], d["width"],
                     seed=d["seed"] + 1000 * offset, workers=2, progress=True)
            open(marker, "w").close()
    climseg_tf.broadcast_object(None, "climseg.default_data")  # the others wait for rank 0
    return dirs["train"], dirs["val"]
