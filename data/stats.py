"""Normalization statistics: reading, computing and writing `stats.h5`.

Two forms were published (see docs/DATA.md):

- DeepCAM: `climate/minval` and `climate/maxval`, 16 values each.
- SC18: `climate/stats` (16, 4) with columns mean, max, min, std, and class
  pixel counts in `climate/labels_stats`.

`write_stats` writes both forms, so either code base can read our files.
The command `climseg-stats DIR` computes them for a directory of samples.
"""

import argparse
import collections
import concurrent.futures
import os
import sys

import h5py
import numpy as np

from data.errors import (
    DEBUG_HELP,
    BadFileLog,
    CommandError,
    DataFileError,
    os_error_reason,
    run_command,
)
from data.files import list_files
from data.flag_types import integer
from data.layouts import (
    CHANNELS,
    CLASSES,
    NUM_CLASSES,
    channel_indices,
    dataset_grid,
    file_samples,
    read_sample,
)
from data.progress import Progress

NORMALIZATIONS = ("minmax", "zscore")

Stats = collections.namedtuple(
    "Stats", ["minval", "maxval", "mean", "std", "class_counts", "path", "count"],
    defaults=(None, None, None, None, None))
Stats.__doc__ = """Per-channel statistics of a data set, for the 16 channels in order.

`minval`, `maxval`, `mean`, `std` are float64 arrays of 16 (mean and std are
None for a file that holds only a range); `class_counts` holds the pixels of
each class, (3,), or one row per label set, (2, 3), as the paper's
`summarize_stats.py` writes them (None when unknown); `path` is the file
read, for error messages; `count` the pixels the statistics are over (None
when unknown)."""


def read_stats(path):
    """Reads a `stats.h5` in any of the forms the peers write.

    - climseg's (`climseg-stats`, `climseg-synth`): both forms below at once.
    - DeepCAM's: `climate/minval`, `climate/maxval`, and (MLPerf DeepCAM's
      own) `climate/count`, `climate/mean`, `climate/sqmean`, from which the
      standard deviation follows, so z-score works too.
    - SC18's: `climate/stats` (16, 4), columns mean, max, min, std; and
      `climate/labels_stats` of (3,) or, as the paper's `summarize_stats.py`
      merges it, (2, 3): one row per label set.

    Args:
        path: the statistics file.

    Returns:
        A `Stats`.

    Raises:
        DataFileError: the file is missing, unreadable, or its datasets are
            absent, of the wrong shape, or not finite.
    """
    if not os.path.isfile(path):
        raise DataFileError(path, "statistics file not found (make one with `climseg-stats DIR`)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(
            path, f"cannot be opened as HDF5 (truncated or corrupt?): {err}") from None
    with f:
        fields = {}
        if "climate/stats" in f:
            table = _array(f, path, "climate/stats", (len(CHANNELS), 4))
            fields.update(mean=table[:, 0], maxval=table[:, 1], minval=table[:, 2],
                          std=table[:, 3])
        if "climate/minval" in f or "climate/maxval" in f:
            fields.update(minval=_array(f, path, "climate/minval", (len(CHANNELS),)),
                          maxval=_array(f, path, "climate/maxval", (len(CHANNELS),)))
        if "std" not in fields and "climate/mean" in f and "climate/sqmean" in f:
            mean = _array(f, path, "climate/mean", (len(CHANNELS),))
            variance = _array(f, path, "climate/sqmean", (len(CHANNELS),)) - mean ** 2
            # float32 rounding can leave a constant channel's variance just below 0.
            fields.update(mean=mean, std=np.sqrt(np.maximum(variance, 0.0)))
        if not fields:
            found = ", ".join(_names(f)) or "no datasets"
            raise DataFileError(path, f"holds no statistics: found {found}; expected "
                                      "climate/minval + climate/maxval (DeepCAM) or "
                                      "climate/stats (16, 4) (SC18)")
        if "climate/labels_stats" in f:
            shape = f["climate/labels_stats"].shape
            expected = shape if len(shape) == 2 and shape[-1] == NUM_CLASSES \
                else (NUM_CLASSES,)
            fields["class_counts"] = _array(f, path, "climate/labels_stats", expected)
    return Stats(path=str(path), **fields)


def write_stats(path, stats):
    """Writes `stats` in all the published forms; atomically (temp file, then rename).

    DeepCAM's loader reads `climate/minval` and `maxval` (and MLPerf
    DeepCAM's, `count`, `mean` and `sqmean` too); SC18's `climate/stats` and
    `climate/labels_stats`: a file written here serves either unchanged.

    Args:
        path: the file to write.
        stats: a `Stats` with all of minval, maxval, mean and std.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        f["climate/minval"] = np.asarray(stats.minval, np.float32)
        f["climate/maxval"] = np.asarray(stats.maxval, np.float32)
        f["climate/stats"] = np.stack([stats.mean, stats.maxval, stats.minval, stats.std],
                                      axis=1).astype(np.float32)
        f["climate/stats"].attrs["columns"] = "mean,max,min,std"
        f["climate/mean"] = np.asarray(stats.mean, np.float32)
        f["climate/sqmean"] = (np.square(stats.std) + np.square(stats.mean)).astype(np.float32)
        f["climate/count"] = np.int64(stats.count or 0)
        f["climate"].attrs["channels"] = ",".join(CHANNELS)
        if stats.class_counts is not None:
            f["climate/labels_stats"] = np.asarray(stats.class_counts, np.int64)
            f["climate/labels_stats"].attrs["classes"] = ",".join(CLASSES)
    os.replace(tmp, path)


def normalizer(stats, normalization="minmax", channels=None):
    """Offset and scale that normalize the selected channels: `(x - offset) * scale`.

    Min-max maps each channel's range to [0, 1] (`(x - min) / (max - min)`,
    as DeepCAM and SC18 did); z-score gives zero mean and unit variance. A
    constant channel (max == min, std 0) is normalized to 0 (scale 0).

    Args:
        stats: a `Stats` or the path of a `stats.h5`.
        normalization: `"minmax"` or `"zscore"`. Defaults to `"minmax"`.
        channels: channel selection, as for `channel_indices`. Defaults to all.

    Returns:
        `(offset, scale)`, float32 arrays with one value per selected channel.

    Raises:
        DataFileError: the statistics lack what the normalization needs, or
            give a negative range or spread for a channel (corrupt).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; expected one of "
                         f"{', '.join(NORMALIZATIONS)}")
    if not isinstance(stats, Stats):
        stats = read_stats(stats)
    indices = channel_indices(channels)
    if normalization == "minmax":
        offset, spread = stats.minval, stats.maxval - stats.minval
        what = "maxval < minval"
    else:
        if stats.mean is None or stats.std is None:
            raise DataFileError(stats.path, "has no mean and std (climate/stats), which z-score "
                                            "normalization needs; use min-max normalization")
        offset, spread = stats.mean, stats.std
        what = "std < 0"
    offset, spread = np.asarray(offset)[indices], np.asarray(spread)[indices]
    if (spread < 0).any():
        names = [CHANNELS[indices[i]] for i in np.flatnonzero(spread < 0)]
        raise DataFileError(stats.path, f"{what} for channels {', '.join(names)} (a corrupt "
                                        "statistics file? recompute it with climseg-stats)")
    # A constant channel (max == min, std 0) is legal: it normalizes to 0.
    scale = np.divide(1.0, spread, out=np.zeros_like(spread, dtype=np.float64),
                      where=spread > 0)
    return offset.astype(np.float32), scale.astype(np.float32)


def implausible_channels(stats, fields, channels=None):
    """The channels of one sample whose values the statistics make implausible.

    A channel's mean over the sample is implausible when it lies outside the
    statistics' range widened by the range's own width on each side (or
    outside 10 standard deviations of their mean, for statistics without a
    range): a sign of other units (PSL in hPa for Pa, say) or another
    variable under the same name. Normalizing such a channel gives values the
    model never saw, and masks that may be wrong without any error.

    Args:
        stats: a `Stats`.
        fields: (H, W, C) values of the selected channels, not normalized.
        channels: the channel selection, as for `channel_indices`. Defaults to all.

    Returns:
        A list of `(channel name, sample mean, low, high)`.
    """
    indices = channel_indices(channels)
    means = np.asarray(fields, np.float64).mean(axis=(0, 1))
    if stats.minval is not None and stats.maxval is not None:
        low, high = np.asarray(stats.minval)[indices], np.asarray(stats.maxval)[indices]
        width = high - low
        low, high = low - width, high + width
    elif stats.mean is not None and stats.std is not None:
        centre, spread = np.asarray(stats.mean)[indices], 10 * np.asarray(stats.std)[indices]
        low, high = centre - spread, centre + spread
    else:
        return []
    return [(CHANNELS[index], float(mean), float(lo), float(hi))
            for index, mean, lo, hi in zip(indices, means, low, high, strict=True)
            if np.isfinite(mean) and not lo <= mean <= hi]


def normalize(data, offset, scale):
    """Normalizes (H, W, C) float32 `data` in place: `(data - offset) * scale`, per channel.

    Works through blocks of rows small enough to stay in the CPU cache, with
    offset and scale tiled to a whole row, so both passes run at cache speed
    with contiguous vector loops: about twice as fast as plain broadcasting
    on a full-size sample, which is memory-bound. `row_normalizer` makes the
    same function once for many samples.

    Args:
        data: C-contiguous float32 array (H, W, C), overwritten.
        offset: C values, e.g. from `normalizer`.
        scale: C values.

    Returns:
        `data`.
    """
    return row_normalizer(offset, scale, data.shape[1])(data)


def row_normalizer(offset, scale, width):
    """A function that normalizes C-contiguous float32 (rows, width, C) arrays in place.

    It does what `normalize` does, with offset and scale tiled once; the
    input pipeline calls it on each block of a sample as the block is read
    (`data.layouts.read_sample_into`).

    Args:
        offset: C values, e.g. from `normalizer`.
        scale: C values.
        width: the grid's width W.

    Returns:
        A function of one array, which it overwrites and returns.
    """
    offset = np.tile(np.asarray(offset, np.float32), width)
    scale = np.tile(np.asarray(scale, np.float32), width)
    step = max(1, (256 << 10) // max(offset.nbytes, 1))

    def apply(data):
        rows = data.reshape(data.shape[0], -1)
        for start in range(0, len(rows), step):
            block = rows[start:start + step]
            np.subtract(block, offset, out=block)
            np.multiply(block, scale, out=block)
        return data

    return apply


def class_frequencies(stats, label_set="labels_0"):
    """Fraction of pixels in each class, from the counts in the statistics.

    The loss weights of the paper derive from these: SC18 used
    `1 / sqrt(frequency)` normalised to sum 1, DeepCAM `frequency ** -0.125`.

    Args:
        stats: a `Stats` or the path of a `stats.h5`.
        label_set: with counts per label set (the paper's (2, 3) form), the
            row of `"labels_0"` or `"labels_1"`, or their mean for
            `"random"`. Defaults to `"labels_0"`.

    Returns:
        float64 array of NUM_CLASSES values summing to 1.

    Raises:
        DataFileError: the statistics hold no class counts.
    """
    if not isinstance(stats, Stats):
        stats = read_stats(stats)
    if stats.class_counts is None or np.sum(stats.class_counts) <= 0:
        raise DataFileError(stats.path, "holds no class counts (climate/labels_stats); "
                                        "recompute it with `climseg-stats`")
    counts = np.asarray(stats.class_counts, np.float64)
    if counts.ndim == 2:  # one row per label set
        rows = {"labels_0": counts[:1], "labels_1": counts[1:2], "random": counts}
        if label_set not in rows or not len(rows[label_set]):
            raise DataFileError(stats.path, f"climate/labels_stats has {len(counts)} label "
                                            f"set(s); no counts for {label_set}")
        counts = rows[label_set].mean(axis=0)
    return counts / counts.sum()


def compute_stats(paths, *, label_set="labels_0", workers=2, progress=False,
                  skip_bad_files=False, bad_files=None):
    """Computes per-channel statistics and class pixel counts over files.

    Streams: each file is read once, reduced to per-channel count, mean, sum
    of squared deviations, min and max, and merged with the parallel
    variance formula (Chan et al.), so memory does not grow with the files.

    Args:
        paths: a directory, glob, file or list of them (see `list_files`).
        label_set: the label set whose classes are counted. Defaults to `"labels_0"`.
        workers: files read in parallel. Defaults to `2`.
        progress: print a progress line to stderr. Defaults to False.
        skip_bad_files: skip unreadable or invalid files instead of raising;
            they are recorded in `bad_files`. Defaults to False.
        bad_files: a `BadFileLog` to record skipped files in. Defaults to a new one.

    Returns:
        A `Stats` with all fields.

    Raises:
        DataFileError: a bad file (unless skipped), or no good file at all.
    """
    bad_files = bad_files if bad_files is not None else BadFileLog()
    files = list_files(paths, bad_files=bad_files if skip_bad_files else None)
    shape = dataset_grid(files, skip_bad_files=skip_bad_files, bad_files=bad_files)
    meter = Progress(len(files), "climseg-stats", enabled=progress)
    total = None

    def reduce(path):
        total = None
        try:
            for time in range(len(file_samples([path]))):  # model output: every time step
                data, labels = read_sample(path, label_set=label_set, expected_shape=shape,
                                           time=time)
                part = _reduce(data, labels)
                total = part if total is None else _merge(total, part)
        except DataFileError as err:
            if not skip_bad_files:
                raise
            bad_files.add(err.path, err.problem)
            return None
        return total

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for path, part in zip(files, pool.map(reduce, files), strict=True):
            meter.update(1, os.path.getsize(path))
            if part is not None:
                total = part if total is None else _merge(total, part)
    meter.close()
    if total is None:
        raise DataFileError(os.path.commonpath(files), f"none of the {len(files)} files is usable")
    count, mean, m2, low, high, classes = total
    return Stats(minval=low, maxval=high, mean=mean, std=np.sqrt(m2 / count),
                 class_counts=classes, count=int(count))


def main(argv=None):
    """`climseg-stats DIR [-o stats.h5]`: computes normalization statistics; the exit status.

    An error is one line: status 2 for bad usage, 1 for a bad input file or
    an output that cannot be written; `--debug` shows the traceback.
    """
    return run_command("climseg-stats", _stats_command, argv)


def _stats_command(argv):
    parser = argparse.ArgumentParser(
        prog="climseg-stats",
        description="Compute stats.h5 (per-channel min, max, mean, std and class pixel "
                    "counts) for a directory of climate samples.")
    parser.add_argument("paths", nargs="+", help="directory, glob or files")
    parser.add_argument("-o", "--output", help="file to write; defaults to DIR/stats.h5")
    parser.add_argument("--label-set", default="labels_0", choices=("labels_0", "labels_1"),
                        help="labels whose classes are counted (default labels_0)")
    parser.add_argument("--workers", type=integer(minimum=1), default=min(8, os.cpu_count() or 1),
                        help="files read in parallel (default: CPU count, at most 8)")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="skip unusable files and list them at the end")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    output = args.output
    if output is None:
        if len(args.paths) != 1 or not os.path.isdir(args.paths[0]):
            parser.error("--output is required unless the input is one directory")
        output = os.path.join(args.paths[0], "stats.h5")
    bad_files = BadFileLog()
    try:
        stats = compute_stats(args.paths, label_set=args.label_set, workers=args.workers,
                              progress=not args.quiet, skip_bad_files=args.skip_bad_files,
                              bad_files=bad_files)
    except DataFileError as err:  # usage if it is a path given, else a file in it
        raise CommandError(str(err), usage=err.path in args.paths) from err
    try:
        write_stats(output, stats)
    except OSError as err:  # h5py's text names neither the file nor the reason plainly
        raise CommandError(f"--output {output}: cannot write the statistics there: "
                           f"{os_error_reason(err)}") from err
    freq = class_frequencies(stats)
    print(f"climseg-stats: wrote {output}; class frequencies "
          + ", ".join(f"{name} {f:.5f}" for name, f in zip(CLASSES, freq, strict=True)))
    if args.skip_bad_files:
        print(f"climseg-stats: {bad_files.report()}", file=sys.stderr)
    return 0


def _names(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def _array(f, path, name, shape):
    if name not in f:
        raise DataFileError(path, f"has no {name}; found {', '.join(_names(f))}")
    value = np.asarray(f[name][...], np.float64)
    if value.shape != shape:
        raise DataFileError(path, f"{name} has shape {value.shape}; expected {shape}")
    if not np.isfinite(value).all():
        raise DataFileError(path, f"{name} contains NaN/Inf")
    return value


def _reduce(data, labels):
    flat = data.reshape(-1, data.shape[-1])
    mean = flat.mean(axis=0, dtype=np.float64)
    m2 = np.square(flat - mean.astype(np.float32), dtype=np.float64).sum(axis=0)
    classes = np.bincount(labels.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return flat.shape[0], mean, m2, flat.min(axis=0).astype(np.float64), \
        flat.max(axis=0).astype(np.float64), classes.astype(np.int64)


def _merge(a, b):
    """Chan et al.'s pairwise update of count, mean and squared deviations."""
    count = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * (b[0] / count)
    m2 = a[2] + b[2] + delta**2 * (a[0] * b[0] / count)
    return (count, mean, m2, np.minimum(a[3], b[3]), np.maximum(a[4], b[4]), a[5] + b[5])
