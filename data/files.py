"""Which files a data set is made of, and which of them a shard reads."""

import contextlib
import errno
import glob
import os
import shutil

import numpy as np

from data.errors import DataFileError
from data.model_output import NETCDF_SUFFIXES

SUFFIXES = (".h5", ".hdf5", *NETCDF_SUFFIXES)
STATS_NAME = "stats.h5"


def list_files(paths, *, suffixes=SUFFIXES, bad_files=None):
    """Lists the sample files in directories, globs and file names, sorted.

    A directory contributes its files ending in one of `suffixes`, except
    `stats.h5` and hidden files (staging's temporary files are hidden).

    Args:
        paths: a path or a list of paths; each a directory, a glob pattern
            (`/data/train/data-2106-*.h5`) or a file.
        suffixes: file endings taken from directories. Defaults to
            `(".h5", ".hdf5", ".nc")`.
        bad_files: a `BadFileLog`: broken symbolic links (and files gone
            since they were listed) are recorded there and left out. Without
            it, they are errors.

    Returns:
        Sorted list of distinct file paths.

    Raises:
        DataFileError: a path that does not exist, a broken symbolic link
            (unless `bad_files`), a directory or glob with no sample files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = set()

    def usable(path):
        """False for a broken link or a vanished file, recorded in `bad_files` (else raises)."""
        if os.path.exists(path):
            return True
        problem = (f"a broken symbolic link (to {os.readlink(path)})" if os.path.islink(path)
                   else "no such file (deleted?)")
        if bad_files is None:
            raise DataFileError(path, f"{problem}; fix or remove it, or give --skip-bad-files")
        bad_files.add(path, problem)
        return False

    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            names = [name for name in os.listdir(path)
                     if name.endswith(tuple(suffixes)) and name != STATS_NAME
                     and not name.startswith(".")]
            if not names:
                raise DataFileError(path, f"directory holds no sample files "
                                          f"(*{', *'.join(suffixes)}, not {STATS_NAME})")
            found.update(p for p in (os.path.join(path, name) for name in names) if usable(p))
        elif os.path.isfile(path):
            found.add(path)
        elif os.path.islink(path) or (bad_files is not None and not glob.has_magic(path)):
            usable(path)
        elif glob.has_magic(path):
            matches = [p for p in glob.glob(path)
                       if os.path.isfile(p) and os.path.basename(p) != STATS_NAME]
            if not matches:
                raise DataFileError(path, "pattern matches no sample files")
            found.update(matches)
        else:
            raise DataFileError(path, "no such file or directory")
    if not found:
        raise DataFileError(", ".join(map(os.fspath, paths)) or "''", "no sample files given")
    return sorted(found)


def shard_files(files, *, training, num_shards=1, shard_index=0, seed=0, epoch=0):
    """The files one shard (Horovod rank) reads in one epoch, in reading order.

    Training: the whole list is shuffled with a generator seeded by
    `(seed, epoch)`, so every epoch has a new order that every rank agrees on
    without communicating; shard `i` takes every `num_shards`-th file from
    position `i`, cut to `len(files) // num_shards` so all shards get the same
    number. The few files cut differ from epoch to epoch.

    Validation: no shuffle, shard `i` takes files `i, i + num_shards, ...`, so
    across shards every file is read exactly once (shard sizes differ by at
    most one).

    Args:
        files: the data set's files (e.g. from `list_files`), in a fixed order.
        training: choose the training or the validation rule above.
        num_shards: number of shards, e.g. `hvd.size()`. Defaults to `1`.
        shard_index: this shard, e.g. `hvd.rank()`. Defaults to `0`.
        seed: shuffle seed, the same on all ranks. Defaults to `0`.
        epoch: epoch number, for the per-epoch shuffle. Defaults to `0`.

    Returns:
        A list of paths.
    """
    files = list(files)
    return [files[i] for i in shard_indices(len(files), training=training, num_shards=num_shards,
                                            shard_index=shard_index, seed=seed, epoch=epoch)]


def shard_indices(num_files, *, training, num_shards=1, shard_index=0, seed=0, epoch=0):
    """`shard_files` on positions: int64 indices into the file list."""
    _check_shard(num_shards, shard_index)
    if not training:
        return np.arange(shard_index, num_files, num_shards, dtype=np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(num_files)
    return order[shard_index::num_shards][:num_files // num_shards].astype(np.int64)


def num_batches(files, batch_size, *, training, num_shards=1, shard_index=0):
    """Batches one shard yields per epoch: `steps_per_epoch` for `model.fit`.

    Training drops the remainder so that every shard yields the same number;
    validation keeps a last, smaller batch so that no sample is left out.

    Args:
        files: the number of samples, or paths as for `list_files` (their
            samples are counted: see `data.layouts.file_samples`).
        batch_size: samples per batch (per shard).
        training: the training or validation rule of `shard_files`.
        num_shards: number of shards. Defaults to `1`.
        shard_index: this shard. Defaults to `0`.

    Returns:
        An int.
    """
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r}; expected an integer >= 1")
    if isinstance(files, (int, np.integer)):
        count = files
    else:  # a sample per HDF5 file, per time step of model output
        from data.layouts import file_samples

        count = len(file_samples(list_files(files)))
    mine = len(shard_indices(count, training=training, num_shards=num_shards,
                             shard_index=shard_index))
    return mine // batch_size if training else -(-mine // batch_size)


def _check_shard(num_shards, shard_index):
    if not (isinstance(num_shards, (int, np.integer)) and num_shards >= 1):
        raise ValueError(f"num_shards={num_shards!r}; expected an integer >= 1")
    if not (isinstance(shard_index, (int, np.integer)) and 0 <= shard_index < num_shards):
        raise ValueError(f"shard_index={shard_index!r}; expected 0..{num_shards - 1}")


@contextlib.contextmanager
def written_atomically(path):
    """Yields a temporary name beside `path` to write; renamed to `path` when the block
    ends, removed if it fails (a full disk, an exception): `path` is whole or absent.

    A write error comes out as an `OSError` naming `path` (not the temporary
    name): also h5py's (no file name) and netCDF-C's, which reports a full disk
    as a `RuntimeError` "NetCDF: HDF error" or as "Permission denied" in a
    writable directory; those say how much space is left."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        error = _write_error(e, tmp, path)
        if error is not None:
            raise error from e
        raise


def _write_error(error, tmp, path):
    """`error` of writing `tmp` as an OSError naming `path`; None for other errors."""
    netcdf = isinstance(error, RuntimeError) and str(error).startswith("NetCDF:")
    if not (netcdf or isinstance(error, OSError)):
        return None
    if isinstance(error, OSError) and error.filename not in (None, tmp, os.fspath(path)):
        return None  # another file's error names that file
    number = getattr(error, "errno", None)
    text = getattr(error, "strerror", None) or " ".join(str(error).split())
    if number == errno.ENOSPC:
        return OSError(number, os.strerror(number), path)
    directory = os.path.dirname(os.fspath(path)) or "."
    if netcdf or (number == errno.EACCES and os.access(directory, os.W_OK)):
        free = shutil.disk_usage(directory).free
        return OSError(None, f"netCDF could not write it ({text}), with {free / 1024:.0f} kB "
                             "free on its disk: is the disk full?", path)
    return OSError(number, text, path)
