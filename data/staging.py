"""Staging: copy a shard of the data set to fast local storage before training.

SC18 and DeepCAM copied each node's share of the files from the parallel file
system to node-local NVMe or /dev/shm, so that training reads locally (see
docs/DATA.md). `stage_files` does that for one shard (rank or node):

- the shard is a window of a seeded permutation of all files; windows of
  different shards do not overlap with `oversample=1`, and each holds
  `oversample` times its share otherwise (neighbouring shards then share files);
- files are copied in parallel, each to a hidden temporary name, checked
  (size and CRC-32 of the copy against what was read from the source), then
  renamed, so no half-written file ever carries a sample's name;
- a small hidden record next to each staged file remembers the source's size
  and modification time and the checksum, so a second run skips what is
  already there and intact and re-copies the rest;
- free space is checked before copying, and running out of space (ENOSPC)
  raises `StagingError` naming the directory, with the temporary file removed;
  any other failure to create or write there is a `StagingError` naming the
  path too.
"""

import argparse
import concurrent.futures
import errno
import json
import math
import os
import shutil
import sys
import zlib

import numpy as np

from data.errors import (
    DEBUG_HELP,
    BadFileLog,
    CommandError,
    DataFileError,
    os_error_reason,
    run_command,
)
from data.files import STATS_NAME, list_files
from data.flag_types import integer, number
from data.progress import Progress

_CHUNK = 8 << 20


class StagingError(RuntimeError):
    """Staging failed: out of space, or a copy that does not match its source."""


def stage_files(paths, stage_dir, *, num_shards=1, shard_index=0, oversample=1.0, seed=0,
                workers=4, verify=True, progress=False, copy_stats=True, bad_files=None):
    """Copies one shard's files to `stage_dir`, skipping files already staged intact.

    Args:
        paths: the shared data set: a directory, glob, file or list (see `list_files`).
        stage_dir: local directory to copy to (created if needed), e.g.
            `/dev/shm/climseg` or a node-local disk.
        num_shards: number of shards, e.g. nodes or `hvd.size()`. Defaults to `1`.
        shard_index: this shard. Defaults to `0`.
        oversample: each shard stages `oversample` times its share
            (`1 <= oversample <= num_shards`); more variety per node, as the
            paper's runs did. Defaults to `1.0`.
        seed: seed of the permutation that assigns files to shards, the same
            on all shards. Defaults to `0`.
        workers: files copied in parallel. Defaults to `4`.
        verify: check each copy's checksum, and of already staged files.
            Defaults to True.
        progress: print progress to stderr (on one rank only). Defaults to False.
        bad_files: a `BadFileLog`: broken links in `paths` are recorded there
            and left out instead of being an error. Defaults to None.
        copy_stats: also copy `stats.h5` when `paths` is a directory holding
            one. Defaults to True.

    Returns:
        Sorted paths of this shard's staged sample files.

    Raises:
        StagingError: not enough space in `stage_dir`, or a copy that does
            not match its source.
        DataFileError: no source files.
    """
    if not 1.0 <= oversample <= max(num_shards, 1):
        raise ValueError(f"oversample={oversample!r}; expected 1 <= oversample <= num_shards "
                         f"({num_shards})")
    files = shard_for_staging(list_files(paths, bad_files=bad_files), num_shards=num_shards,
                              shard_index=shard_index,
                              oversample=oversample, seed=seed)
    if copy_stats and isinstance(paths, (str, os.PathLike)) and os.path.isdir(paths):
        stats = os.path.join(paths, STATS_NAME)
        files += [stats] if os.path.isfile(stats) else []
    names = [os.path.basename(path) for path in files]
    if len(set(names)) != len(names):
        raise ValueError(f"two source files share a name; staging to one directory needs "
                         f"distinct names: {sorted(n for n in set(names) if names.count(n) > 1)}")
    try:
        os.makedirs(stage_dir, exist_ok=True)
    except OSError as e:  # a full disk, no permission, a file of that name
        raise StagingError(f"{stage_dir}: cannot create the staging directory: "
                           f"{os_error_reason(e)}") from e
    todo = [(src, os.path.join(stage_dir, name)) for src, name in zip(files, names, strict=True)]
    missing = [(src, dst) for src, dst in todo if not _recorded(src, dst)]
    need = sum(os.path.getsize(src) for src, _ in missing)
    free = shutil.disk_usage(stage_dir).free
    if need > free:
        raise StagingError(f"{stage_dir}: not enough space to stage {len(missing)} files: they "
                           f"need {_size(need)}, {_size(free)} is free")
    meter = Progress(len(todo), "climseg-stage", enabled=progress)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for copied in pool.map(lambda pair: _stage_one(*pair, verify=verify, stage_dir=stage_dir),
                               todo):
            meter.update(1, copied)
    meter.close()
    return sorted(dst for _, dst in todo if os.path.basename(dst) != STATS_NAME)


def shard_for_staging(files, *, num_shards=1, shard_index=0, oversample=1.0, seed=0):
    """The files a shard stages: a window of a seeded permutation of `files`.

    Shard `i` starts at position `i * N // num_shards` of the permutation and
    takes its share times `oversample` files, wrapping around; with
    `oversample=1` the shards partition the files exactly.

    Returns:
        A list of paths.
    """
    if not (isinstance(num_shards, (int, np.integer)) and num_shards >= 1
            and isinstance(shard_index, (int, np.integer)) and 0 <= shard_index < num_shards):
        raise ValueError(f"num_shards={num_shards!r}, shard_index={shard_index!r}; expected "
                         "num_shards >= 1 and 0 <= shard_index < num_shards")
    files = list(files)
    count = len(files)
    order = np.random.default_rng(seed).permutation(count)
    start = shard_index * count // num_shards
    share = (shard_index + 1) * count // num_shards - start
    take = min(count, math.ceil(share * oversample))
    return [files[order[(start + k) % count]] for k in range(take)]


def main(argv=None):
    """`climseg-stage SRC --to DIR`: stages this rank's or node's files; the exit status.

    An error is one line: status 2 for bad usage (flags, no source files), 1
    for a copy that failed (no space, a mismatch); `--debug` shows the
    traceback.
    """
    return run_command("climseg-stage", _stage_command, argv)


def _stage_command(argv):
    parser = argparse.ArgumentParser(
        prog="climseg-stage",
        description="Copy a shard of a data set to local storage, verified, skipping files "
                    "already staged. Shard count and index default to the launcher's "
                    "rank variables (Horovod, Open MPI, Slurm).")
    parser.add_argument("paths", nargs="+", help="shared directory, glob or files")
    parser.add_argument("--to", required=True, dest="stage_dir", help="local directory")
    parser.add_argument("--num-shards", type=integer(minimum=1),
                        default=_env_int("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"))
    parser.add_argument("--shard-index", type=integer(minimum=0),
                        default=_env_int("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID",
                                         default=0))
    parser.add_argument("--oversample", type=number(minimum=1), default=1.0)
    parser.add_argument("--seed", type=integer(minimum=0), default=0)
    parser.add_argument("--workers", type=integer(minimum=1), default=4)
    parser.add_argument("--no-verify", action="store_true", help="skip checksums")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="leave out broken symbolic links and report them")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    paths = args.paths[0] if len(args.paths) == 1 else args.paths
    bad_files = BadFileLog() if args.skip_bad_files else None
    try:
        staged = stage_files(paths, args.stage_dir, num_shards=args.num_shards or 1,
                             shard_index=args.shard_index, oversample=args.oversample,
                             seed=args.seed, workers=args.workers, verify=not args.no_verify,
                             progress=not args.quiet, bad_files=bad_files)
    except StagingError as err:
        raise CommandError(str(err)) from err
    except DataFileError as err:  # usage if it is a path given, else a file in it
        raise CommandError(str(err), usage=err.path in args.paths) from err
    except ValueError as err:  # the flags
        raise CommandError(str(err), usage=True) from err
    if bad_files is not None and len(bad_files):
        print(f"climseg-stage: {bad_files.report()}", file=sys.stderr)
    print(f"climseg-stage: {len(staged)} files in {args.stage_dir}", file=sys.stderr)
    return 0


def _size(nbytes):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _env_int(*names, default=None):
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def _record_path(dst):
    return os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.staged")


def _read_record(dst):
    try:
        with open(_record_path(dst)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _recorded(src, dst):
    """The record says `dst` is a complete copy of `src` as it is now (no checksum read)."""
    record = _read_record(dst)
    if record is None or not os.path.isfile(dst):
        return False
    st = os.stat(src)
    return (record.get("size") == st.st_size == os.path.getsize(dst)
            and record.get("mtime_ns") == st.st_mtime_ns)


def _crc32(path):
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _stage_one(src, dst, *, verify, stage_dir):
    """Copies `src` to `dst` unless already staged intact; returns bytes copied."""
    if _recorded(src, dst) and (not verify or _crc32(dst) == _read_record(dst)["crc32"]):
        return 0
    record = _record_path(dst)
    if os.path.exists(record):
        os.remove(record)  # From here on, dst is not trusted until re-recorded.
    st = os.stat(src)
    tmp = os.path.join(stage_dir, f".{os.path.basename(dst)}.partial-{os.getpid()}")
    try:
        crc = 0
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
                fout.write(chunk)
        size = os.path.getsize(tmp)
        if size != st.st_size:
            raise StagingError(f"{dst}: copied {size} bytes of {src}, which has {st.st_size}")
        if verify and _crc32(tmp) != crc:
            raise StagingError(f"{dst}: checksum of the copy differs from {src}'s")
        os.replace(tmp, dst)
        with open(f"{record}.tmp", "w") as f:
            json.dump({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32": crc}, f)
        os.replace(f"{record}.tmp", record)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise StagingError(f"{stage_dir}: out of space while copying {src} "
                               f"({_size(st.st_size)}); free some space or stage "
                               f"fewer files (more shards, smaller oversample)") from err
        if isinstance(err, OSError):
            raise StagingError(f"{dst}: cannot stage {src}: {os_error_reason(err)}") from err
        raise
    return st.st_size
