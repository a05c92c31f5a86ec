"""Reading one climate sample from a file, in any of the published layouts.

Three layouts are found in the wild (see docs/DATA.md):

- DeepCAM: HDF5, `climate/data` (H, W, 16) channels last, labels in
  `climate/labels_0` (H, W) and sometimes `climate/labels_1`.
- SC18: HDF5, `climate/data` (16, H, W) channels first, `climate/labels`
  (2, H, W) holding both label sets.
- ClimateNet: netCDF4 (which is HDF5 underneath), the 16 variables by name on
  (time, lat, lon) with one time step, expert labels in `LABELS`.

Any other netCDF file (netCDF3, many time steps, a subset of the variables,
dimensions in another order) is read as climate-model output with xarray
(`data.model_output`): each of its time steps is one sample, `time` in
`read_sample`. `read_sample` detects the layout, and always returns channels
last.
"""

import collections
import contextlib
import os
import threading

import h5py
import numpy as np

from data.errors import DataFileError

CHANNELS = ("TMQ", "U850", "V850", "UBOT", "VBOT", "QREFHT", "PS", "PSL",
            "T200", "T500", "PRECT", "TS", "TREFHT", "Z1000", "Z200", "ZBOT")
"""The 16 CAM5 variables, in the published channel order."""

CLASSES = ("background", "tropical_cyclone", "atmospheric_river")
"""The classes of the labels, by class id."""
CLASS_KEYS = ("background", "tc", "ar")
"""Short class names, as in metric keys (`iou_tc`, `val_iou_ar`)."""
NUM_CLASSES = len(CLASSES)
LABEL_SETS = ("labels_0", "labels_1", "random")

_EXPECTED_LAYOUTS = (
    "DeepCAM (climate/data (H, W, 16) + climate/labels_0), "
    "SC18 (climate/data (16, H, W) + climate/labels (2, H, W)), "
    "ClimateNet netCDF (variables TMQ ... ZBOT and LABELS on (time, lat, lon))")

FileInfo = collections.namedtuple("FileInfo", ["layout", "height", "width", "label_sets",
                                               "num_times"], defaults=(1,))
"""What `inspect_file` finds: layout name, grid size, label sets available, time steps."""


def channel_indices(channels=None):
    """Turns a channel selection into a list of indices into `CHANNELS`.

    Args:
        channels: None (all 16), a sequence of indices and/or names, or a
            comma-separated string of them, e.g. `"TMQ,U850,V850,PSL"` or
            `"0,1,2,7"`. Names are case-insensitive.

    Returns:
        A list of ints in the order given.

    Raises:
        ValueError: for an unknown name, an index out of range or not an
            integer (1.5, True), a repeat or an empty selection.
    """
    if channels is None:
        return list(range(len(CHANNELS)))
    items = channels.split(",") if isinstance(channels, str) else list(channels)
    upper = [name.upper() for name in CHANNELS]
    indices = []
    for item in items:
        token = item.strip() if isinstance(item, str) else item
        if isinstance(token, str) and token.upper() in upper:
            index = upper.index(token.upper())
        elif isinstance(token, bool) or not isinstance(token, (str, int, np.integer)):
            # int(1.5) would be 1 and int(True) 1: a silent, wrong channel.
            raise ValueError(
                f"channel {item!r} in channels={channels!r} is a {type(item).__name__}; "
                f"expected an integer index 0..{len(CHANNELS) - 1} or a name")
        else:
            try:
                index = int(token)
            except (TypeError, ValueError):
                raise ValueError(
                    f"unknown channel {item!r} in channels={channels!r}; expected indices "
                    f"0..{len(CHANNELS) - 1} or names {', '.join(CHANNELS)}") from None
            if not 0 <= index < len(CHANNELS):
                raise ValueError(f"channel index {index} in channels={channels!r} is out of "
                                 f"range; expected 0..{len(CHANNELS) - 1}")
        if index in indices:
            raise ValueError(f"channel {CHANNELS[index]} appears twice in channels={channels!r}")
        indices.append(index)
    if not indices:
        raise ValueError(f"channels={channels!r} selects no channel")
    return indices


def inspect_file(path):
    """Detects the layout of a file and its grid size, reading metadata only.

    Args:
        path: an HDF5 or netCDF4 file.

    Returns:
        A `FileInfo(layout, height, width, label_sets, num_times)`, where
        layout is `"deepcam"`, `"sc18"`, `"climatenet"` or `"model_output"`
        (netCDF read with xarray; `num_times` samples).

    Raises:
        DataFileError: the file cannot be opened (missing, truncated, not
            HDF5) or is in none of the known layouts.
    """
    if _is_model_output(path):
        from data.model_output import ModelOutput

        try:
            key = _file_key(path)
        except OSError as err:  # gone since _is_model_output looked
            raise DataFileError(path, f"cannot be read: {err.strerror}") from None
        with _OPEN_LOCK:
            if key in _INFOS:
                return _INFOS[key]
        with ModelOutput(path, channels="available") as out:
            info = FileInfo("model_output", *out.grid,
                            ("labels_0",) * (out.label_variable is not None), out.num_times)
        return _remember(_INFOS, key, info, _KEEP_INFOS)
    with _open(path) as f:
        return _detect(f, path)


def _is_model_output(path):
    """Whether `path` is netCDF that none of the HDF5 layouts reads (by name and content)."""
    from data.model_output import is_netcdf

    if not is_netcdf(path):
        return False
    try:
        key = _file_key(path)
    except OSError:
        return False  # missing: the HDF5 path names it
    with _OPEN_LOCK:
        if key in _KINDS:
            return _KINDS[key]
    try:
        with _open(path) as f:
            _detect(f, path)
        kind = False
    except DataFileError:
        kind = True
    return _remember(_KINDS, key, kind, _KEEP_KINDS)


def _remember(cache, key, value, limit):
    """Stores `value` in one of the bounded caches below (the oldest out first); returns it."""
    with _OPEN_LOCK:
        cache[key] = value
        while len(cache) > limit:
            cache.pop(next(iter(cache)))
    return value


def _file_key(path):
    """A file's identity for the caches: path, size and modification time."""
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


# Model-output files are opened once (xarray's metadata) and kept for the reads of
# their other time steps; a file changed on disk is opened afresh. Their metadata
# (`inspect_file`), needed by the grid check, the sample count and the pipeline, is
# read once per file.
_OPEN_LOCK = threading.Lock()
_KINDS, _KEEP_KINDS = {}, 4096
_INFOS, _KEEP_INFOS = {}, 1 << 16
_OPENED = collections.OrderedDict()
_KEEP_OPEN = 8


def _model_output(path, indices):
    """An open `ModelOutput` of `path` for channels `indices`, shared by the reader threads."""
    from data.model_output import ModelOutput

    try:
        key = (*_file_key(path), tuple(indices))
    except OSError as err:
        raise DataFileError(path, f"cannot be read: {err.strerror}") from None
    with _OPEN_LOCK:
        if key in _OPENED:
            _OPENED.move_to_end(key)
            return _OPENED[key]
    out = ModelOutput(path, channels=indices)
    evicted = []
    with _OPEN_LOCK:
        if key in _OPENED:  # another thread was quicker
            evicted.append(out)
            out = _OPENED[key]
        else:
            _OPENED[key] = out
            while len(_OPENED) > _KEEP_OPEN:
                evicted.append(_OPENED.popitem(last=False)[1])
    for old in evicted:  # a reader still holding one opens the file for its read
        old.close()
    return out


def file_samples(files, *, skip_bad_files=False, bad_files=None):
    """`(path, time step)` of every sample in `files`, in order.

    HDF5 samples are one each (no file is opened); netCDF model output has
    one per time step (its metadata is read).

    Args:
        files: paths, in a fixed order.
        skip_bad_files: record netCDF files that cannot be read in
            `bad_files` and leave them out, instead of raising.
        bad_files: a `BadFileLog`, required when skipping.

    Raises:
        DataFileError: a netCDF file cannot be read (unless skipping).
    """
    from data.model_output import is_netcdf

    samples = []
    for path in files:
        steps = 1
        if is_netcdf(path):
            try:
                steps = inspect_file(path).num_times
            except DataFileError as err:
                if not skip_bad_files:
                    raise
                bad_files.add(err.path, err.problem)
                continue
        samples.extend((path, t) for t in range(steps))
    return samples


def dataset_grid(files, *, skip_bad_files=False, bad_files=None, workers=8):
    """(H, W) that a data set's files share: the grid of most of them.

    Reads every file's metadata (in `workers` threads), so that one odd file,
    wherever it sorts, neither decides the grid nor gets the good files
    blamed. Ties go to the grid of the file listed first.

    Args:
        files: paths, in a fixed order.
        skip_bad_files: record unusable files and files of another grid in
            `bad_files` instead of raising.
        bad_files: a `BadFileLog`, required when skipping.
        workers: files inspected at once. Defaults to `8`.

    Raises:
        DataFileError: (when not skipping) a file is unusable, or has another
            grid than most (the message names it, its grid and theirs); (when
            skipping) no file is usable.
    """
    from concurrent.futures import ThreadPoolExecutor

    def grid(path):
        try:
            info = inspect_file(path)
            return (info.height, info.width), None
        except DataFileError as err:
            return None, err

    with ThreadPoolExecutor(max(1, min(workers, len(files)))) as pool:
        found = list(pool.map(grid, files))
    for _, err in found:
        if err is not None:
            if not skip_bad_files:
                raise err
            bad_files.add(err.path, err.problem)
    if all(shape is None for shape, _ in found):
        raise DataFileError(files[0] if len(files) == 1 else f"{files[0]} ... {files[-1]}",
                            f"none of the {len(files)} files is usable")
    return majority_grid([(path, shape) for path, (shape, _) in zip(files, found, strict=True)
                          if shape is not None], bad_files=bad_files if skip_bad_files else None,
                         total=len(files))


def majority_grid(grids, bad_files=None, total=None):
    """The grid most of `(path, (H, W))` pairs share; ties go to the one listed first.

    Args:
        grids: `(path, (H, W))` pairs, at least one.
        bad_files: a `BadFileLog`: files of another grid are recorded there.
            Without it, the first such file raises.
        total: the number of files, for the message. Defaults to `len(grids)`.

    Raises:
        DataFileError: a file of another grid (unless `bad_files`), naming
            its grid and the others'.
    """
    counts = collections.Counter(shape for _, shape in grids)
    common = max(counts, key=counts.get)  # Counter keeps first-seen order among ties
    for path, shape in grids:
        if shape != common:
            problem = (f"grid is {shape[0]}x{shape[1]}, but the other files' is "
                       f"{common[0]}x{common[1]} ({counts[common]} of "
                       f"{total or len(grids)} files)")
            if bad_files is None:
                raise DataFileError(path, problem)
            bad_files.add(path, problem)
    return common


def read_sample(path, *, channels=None, label_set="labels_0", rng=None, expected_shape=None,
                validate=True, labels_required=True, time=0):
    """Reads one sample: fields channels last and the class of every pixel.

    Args:
        path: a file in the DeepCAM, SC18 or ClimateNet layout.
        channels: channel selection, as for `channel_indices`. Defaults to all 16.
        label_set: `"labels_0"`, `"labels_1"` or `"random"` (one of the
            file's label sets, drawn with `rng`, as SC18 did per read).
            ClimateNet files have only `labels_0` (their `LABELS`).
        rng: a `numpy.random.Generator` for `label_set="random"`.
        expected_shape: (H, W) all files must have; a file of another size
            raises. Defaults to None (any size).
        validate: check for NaN/Inf in the data and for labels outside
            0..NUM_CLASSES-1. Defaults to True.
        labels_required: a file without labels raises. When False, such a
            file (e.g. new model output to predict on) gives labels None.
            Defaults to True.
        time: the time step of model output (`inspect_file(path).num_times`
            of them); HDF5 samples have only 0. Defaults to 0.

    Returns:
        `(data, labels)`: float32 (H, W, C) and int32 (H, W) (or None, see
        `labels_required`).

    Raises:
        DataFileError: naming the file and what is wrong with it.
    """
    _check_label_set(label_set)
    indices = channel_indices(channels)
    if _is_model_output(path):
        return _read_model_output(path, time, indices, expected_shape, label_set,
                                  labels_required)
    _check_time(path, time, 1)
    with _open(path) as f:
        info, label_set = _resolve(f, path, expected_shape, label_set, rng, labels_required)
        with _read_errors(path):
            data, labels = _READERS[info.layout](f, path, indices, label_set)
    if validate:
        _validate_data(path, data, indices)
        _validate_labels(path, labels, label_set)
    return data, None if labels is None else labels.astype(np.int32, copy=False)


def read_sample_into(path, data, labels, *, channels=None, label_set="labels_0", rng=None,
                     validate=True, transform=None, time=0):
    """Reads one sample into given arrays, such as one sample's place in a batch.

    What `read_sample` does, with the grid size given by `data`, and one pass
    over memory where it can: the data of a DeepCAM file (contiguous float32,
    all 16 channels, as published) are read in blocks of rows of about 1 MB
    straight into `data`, and each block is checked for NaN/Inf and handed to
    `transform` while it is still in the CPU cache. Other files are read with
    `read_sample`'s readers, checked, copied, then transformed.

    Args:
        path: a file in the DeepCAM, SC18 or ClimateNet layout.
        data: C-contiguous float32 (H, W, C) array, overwritten.
        labels: int32 (H, W) array, overwritten.
        channels: channel selection, as for `channel_indices`; C of them.
            Defaults to all 16.
        label_set: as for `read_sample`.
        rng: as for `read_sample`.
        validate: as for `read_sample`.
        transform: a function that changes a C-contiguous float32 (rows, W, C)
            array in place, e.g. a `data.stats.row_normalizer`; applied to
            every row of `data` once, after validation. Defaults to None.
        time: as for `read_sample`.

    Raises:
        DataFileError: as `read_sample` does, with the other files' grid
            being `data`'s. When it raises, `data` may hold part of the sample.
    """
    _check_label_set(label_set)
    indices = channel_indices(channels)
    if _is_model_output(path):
        data[...], labels[...] = _read_model_output(path, time, indices, data.shape[:2],
                                                    label_set, True)
        if transform is not None:
            transform(data)
        return
    _check_time(path, time, 1)
    with _open(path) as f, _read_errors(path):
        info, label_set = _resolve(f, path, data.shape[:2], label_set, rng, True)
        done = (info.layout == "deepcam" and indices == list(range(len(CHANNELS)))
                and _read_rows_into(f["climate/data"], path, data, indices, validate, transform))
        if done:
            got = _read_whole(f[f"climate/{label_set}"], path, out=labels)
        else:
            source, got = _READERS[info.layout](f, path, indices, label_set)
    if not done:
        if validate:
            _validate_data(path, source, indices)
        data[...] = source
        if transform is not None:
            transform(data)
    if validate:
        _validate_labels(path, got, label_set)
    if got is not labels:
        labels[...] = got


def _check_time(path, time, num_times):
    if not 0 <= time < num_times:
        raise DataFileError(path, f"has {num_times} time step(s); time step {time} asked for")


def _read_model_output(path, time, indices, expected_shape, label_set, labels_required):
    """`read_sample` of netCDF model output (always validated: `ModelOutput.read`)."""
    out = _model_output(path, indices)
    if expected_shape is not None and out.grid != tuple(expected_shape):
        raise DataFileError(path, f"grid is {out.grid[0]}x{out.grid[1]}, but the other "
                                  f"files' is {expected_shape[0]}x{expected_shape[1]}")
    if out.label_variable is None and labels_required:
        raise DataFileError(path, "has no labels; expected a LABELS variable on the "
                                  "fields' grid")
    if out.label_variable is not None and label_set == "labels_1":
        raise DataFileError(path, f"has no label set labels_1; it has labels_0 "
                                  f"({out.label_variable})")
    _check_time(path, time, out.num_times)
    return out.read(time)


def _check_label_set(label_set):
    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set={label_set!r}; expected one of {', '.join(LABEL_SETS)}")


def _resolve(f, path, expected_shape, label_set, rng, labels_required):
    """The file's layout, checked against the expected grid, and the label set to read."""
    info = _detect(f, path)
    if expected_shape is not None and (info.height, info.width) != tuple(expected_shape):
        raise DataFileError(path, f"grid is {info.height}x{info.width}, but the other files' "
                                  f"is {expected_shape[0]}x{expected_shape[1]}")
    if not info.label_sets:
        if labels_required:
            raise DataFileError(path, f"has no labels; expected {_EXPECTED_LAYOUTS}")
        return info, None
    if label_set == "random":
        rng = rng if rng is not None else np.random.default_rng()
        return info, info.label_sets[rng.integers(len(info.label_sets))]
    if label_set not in info.label_sets:
        raise DataFileError(path, f"has no label set {label_set}; it has "
                                  f"{', '.join(info.label_sets)}")
    return info, label_set


@contextlib.contextmanager
def _read_errors(path):
    """Turns h5py's and the OS's read errors into a `DataFileError` naming the file."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        raise DataFileError(
            path, f"cannot read the data (truncated or corrupt file?): {err}") from None


def regular_grid(height, width):
    """`(lat, lon)`: cell centres of a global regular grid, latitude from the south pole to
    the north, longitude from 0 east (the synthetic data's grid, and the one assumed for
    files without coordinates)."""
    return ((np.arange(height) + 0.5) * 180.0 / height - 90.0,
            np.arange(width) * 360.0 / width)


def sample_coordinates(path):
    """`(lat, lon)`: an HDF5 sample's 1-D `lat` and `lon` datasets (float64), or
    `(None, None)` when it lacks them (DeepCAM's files hold none).

    Raises:
        DataFileError: the file cannot be opened.
    """
    with _open(path) as f:
        found = [np.asarray(f[name], np.float64) if name in f and f[name].ndim == 1 else None
                 for name in ("lat", "lon")]
    return tuple(found) if all(v is not None for v in found) else (None, None)


def _open(path):
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except OSError as err:
        raise DataFileError(path, f"cannot be opened as HDF5/netCDF4 (truncated or corrupt "
                                  f"file?): {err}") from None


def _describe(f):
    """`name (shape) dtype` for every dataset in a file, for error messages."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(f"{name} {obj.shape} {obj.dtype}")

    f.visititems(visit)
    return ", ".join(found) if found else "no datasets"


def _detect(f, path):
    """The file's layout; files without labels (e.g. to predict on) have no label sets."""
    n = len(CHANNELS)
    if "climate/data" in f and isinstance(f["climate/data"], h5py.Dataset):
        shape = f["climate/data"].shape
        if len(shape) == 3 and shape[2] == n and "climate/labels" not in f:
            sets = tuple(s for s in ("labels_0", "labels_1") if f"climate/{s}" in f)
            if all(f[f"climate/{s}"].shape == shape[:2] for s in sets):
                return FileInfo("deepcam", shape[0], shape[1], sets)
        if len(shape) == 3 and shape[0] == n and "climate/labels_0" not in f:
            lshape = f["climate/labels"].shape if "climate/labels" in f else (0, *shape[1:])
            if len(lshape) == 3 and lshape[1:] == shape[1:] and lshape[0] <= 2:
                return FileInfo("sc18", shape[1], shape[2], ("labels_0", "labels_1")[:lshape[0]])
    elif all(name in f for name in CHANNELS):
        shape = f[CHANNELS[0]].shape
        lshape = f["LABELS"].shape if "LABELS" in f else shape
        if (len(shape) == 3 and shape[0] == 1 and lshape in (shape, shape[1:])
                and all(f[name].shape == shape for name in CHANNELS)):
            return FileInfo("climatenet", shape[1], shape[2], ("labels_0",) * ("LABELS" in f))
    raise DataFileError(path, f"is in no known layout: found {_describe(f)}; expected "
                              f"{_EXPECTED_LAYOUTS}")


def aligned_empty(shape, dtype, alignment=64):
    """`np.empty(shape, dtype)` starting at a multiple of `alignment` bytes.

    TensorFlow takes a numpy array returned by `tf.numpy_function` without a
    copy only when its data are aligned as its own tensors are (64 bytes with
    AVX-512); numpy's large arrays start 16 bytes into a page. At full size,
    the copy was 2.7 ms per sample.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].view(dtype).reshape(shape)


def _read_whole(dataset, path, out=None):
    """Reads a dataset; a contiguous one with plain file reads, outside h5py's lock.

    h5py serializes all its calls with one global lock, so parallel h5py reads
    do not overlap. An uncompressed, contiguous dataset (what the published
    files use) is a plain byte range of the file: reading it with `readinto`
    releases the GIL, so the input pipeline's reader threads run in parallel.

    Args:
        dataset: an h5py dataset.
        path: its file.
        out: an array to read into when it has the dataset's shape and
            dtype and the dataset is contiguous. Defaults to a new one.

    Returns:
        `out`, or a new array when `out` could not be used.
    """
    offset = _offset(dataset)
    if offset is None:  # Chunked, compressed or never written: let HDF5 do it.
        return dataset[...]
    if out is None or out.shape != dataset.shape or out.dtype != dataset.dtype:
        out = aligned_empty(dataset.shape, dataset.dtype)
    with open(path, "rb", buffering=0) as raw:
        raw.seek(offset)
        _fill(raw, out, path, dataset.name, offset)
    return out


def _offset(dataset):
    """The file offset of a contiguous dataset's bytes, or None."""
    return dataset.id.get_offset() if dataset.chunks is None else None


def _fill(raw, out, path, name, offset):
    """Reads `out.nbytes` bytes from the open file `raw` into C-contiguous `out`."""
    got = raw.readinto(memoryview(out).cast("B"))
    if got != out.nbytes:
        raise DataFileError(path, f"{name} is truncated: read {got} of {out.nbytes} "
                                  f"bytes at offset {offset}")


_BLOCK_BYTES = 1 << 20  # Rows read, checked and transformed at a time: within a core's L2.


def _read_rows_into(dataset, path, data, indices, validate, transform):
    """Reads contiguous float32 `dataset` into `data` block by block; False if it cannot.

    Each block is checked while in cache through its sum, which is finite
    exactly when every value is, unless finite values overflow it: then the
    values themselves are checked.
    """
    offset = _offset(dataset)
    if (offset is None or dataset.dtype != data.dtype or dataset.shape != data.shape
            or not data.flags.c_contiguous):
        return False
    rows = data.reshape(data.shape[0], -1)
    step = max(1, _BLOCK_BYTES // max(rows[0].nbytes, 1))
    clean = True
    with open(path, "rb", buffering=0) as raw:
        raw.seek(offset)
        for start in range(0, len(rows), step):
            block = rows[start:start + step]
            _fill(raw, block, path, dataset.name, offset)
            if validate and clean and not np.isfinite(np.add.reduce(block, axis=None)):
                clean = bool(np.isfinite(block).all())
            if clean and transform is not None:
                transform(data[start:start + step])
    if not clean:
        _validate_data(path, data, indices)  # raises, counting the bad values per channel
    return True


def _read_deepcam(f, path, indices, label_set):
    data = _read_whole(f["climate/data"], path)
    if indices != list(range(len(CHANNELS))):
        data = data[..., indices]
    labels = None if label_set is None else _read_whole(f[f"climate/{label_set}"], path)
    return data.astype(np.float32, copy=False), labels


def _read_sc18(f, path, indices, label_set):
    if indices == list(range(len(CHANNELS))):
        data = _read_whole(f["climate/data"], path)
    else:
        data = f["climate/data"][sorted(indices)]
        data = data[[sorted(indices).index(i) for i in indices]]
    data = np.ascontiguousarray(np.moveaxis(data, 0, -1), dtype=np.float32)
    labels = None if label_set is None else f["climate/labels"][int(label_set[-1])]
    return data, labels


def _read_climatenet(f, path, indices, label_set):
    data = np.empty((*f[CHANNELS[0]].shape[1:], len(indices)), np.float32)
    for out, index in enumerate(indices):
        data[..., out] = f[CHANNELS[index]][0]
    if label_set is None:
        return data, None
    return data, f["LABELS"][...].reshape(data.shape[:2])


_READERS = {"deepcam": _read_deepcam, "sc18": _read_sc18, "climatenet": _read_climatenet}


def _validate_data(path, data, indices):
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data)
        per_channel = bad.sum(axis=(0, 1))
        names = [CHANNELS[indices[c]] for c in np.flatnonzero(per_channel)]
        raise DataFileError(path, f"data contain {int(per_channel.sum())} NaN/Inf values "
                                  f"(channels {', '.join(names)})")


def _validate_labels(path, labels, label_set):
    if labels is None:
        return
    if labels.dtype.kind == "f":
        if not (np.isfinite(labels).all() and np.array_equal(labels, np.round(labels))):
            raise DataFileError(path, f"{label_set} contain non-integer values; expected class "
                                      f"ids 0..{NUM_CLASSES - 1}")
    elif labels.dtype.kind not in "iub":
        raise DataFileError(path, f"{label_set} have dtype {labels.dtype}; expected integers")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= NUM_CLASSES:
        outside = np.unique(labels[(labels < 0) | (labels >= NUM_CLASSES)])
        raise DataFileError(path, f"{label_set} contain values outside the class range "
                                  f"0..{NUM_CLASSES - 1}: {outside[:10].tolist()}")
