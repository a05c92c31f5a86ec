"""data.staging: copying a shard to local storage, verified, resumable, and safe when it fails."""

import errno
import os
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

import data.staging as staging
from data.files import list_files
from data.staging import StagingError, main, shard_for_staging, stage_files


def _source(tmp_path, count=9):
    src = tmp_path / "shared"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        (src / f"data-{i}.h5").write_bytes(rng.bytes(1000 + 100 * i))
    (src / "stats.h5").write_bytes(b"stats")
    return src


def test_shards_partition_the_files_and_oversampling_widens_them():
    files = [f"f{i}" for i in range(10)]
    parts = [shard_for_staging(files, num_shards=3, shard_index=i, seed=1) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(files)
    assert [len(p) for p in parts] == [3, 3, 4]
    wide = shard_for_staging(files, num_shards=3, shard_index=2, seed=1, oversample=2.0)
    assert len(wide) == 8 and wide[:4] == parts[2] and wide[4:] == parts[0] + parts[1][:1]


def test_stage_copies_verifies_and_skips_intact_files(tmp_path, capsys):
    src = _source(tmp_path)
    dst = tmp_path / "local"
    staged = stage_files(src, dst, num_shards=2, shard_index=1, progress=True)
    expected = shard_for_staging(list_files(src), num_shards=2, shard_index=1)
    assert [os.path.basename(p) for p in staged] == sorted(os.path.basename(p) for p in expected)
    for path in staged:
        assert open(path, "rb").read() == open(src / os.path.basename(path), "rb").read()
    assert (dst / "stats.h5").read_bytes() == b"stats"
    assert list_files(dst) == staged  # records and stats.h5 are not samples
    assert "climseg-stage: 6/6 files" in capsys.readouterr().err
    # Second run: nothing to copy. A staged file damaged since is copied again.
    before = {p: os.stat(p).st_mtime_ns for p in staged}
    with open(staged[0], "r+b") as f:
        f.write(b"XX")
    stage_files(src, dst, num_shards=2, shard_index=1)
    assert open(staged[0], "rb").read() == open(src / os.path.basename(staged[0]), "rb").read()
    assert os.stat(staged[0]).st_mtime_ns != before[staged[0]]
    assert all(os.stat(p).st_mtime_ns == before[p] for p in staged[1:])


def test_interrupted_copy_leaves_no_file_that_looks_valid(tmp_path, monkeypatch):
    src = _source(tmp_path)
    dst = tmp_path / "local"
    real_crc = zlib.crc32
    calls = []

    def crash_on_third_chunk(chunk, value=0):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a copy
        return real_crc(chunk, value)

    monkeypatch.setattr(staging, "_CHUNK", 512)
    monkeypatch.setattr(staging.zlib, "crc32", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        stage_files(src, dst, workers=1, copy_stats=False)
    monkeypatch.setattr(staging.zlib, "crc32", real_crc)
    leftovers = os.listdir(dst)
    assert not [name for name in leftovers if "partial" in name]
    assert all(os.path.getsize(dst / n) == os.path.getsize(src / n)
               for n in leftovers if not n.startswith("."))
    # A copy killed hard leaves its hidden temporary file and an unrecorded
    # (possibly short) file: both are ignored, and the next run repairs them.
    name = "data-5.h5"
    (dst / f".{name}.partial-99999").write_bytes(b"half")
    (dst / name).write_bytes(b"short")
    staged = stage_files(src, dst, workers=2)
    assert len(staged) == 9
    assert (dst / name).read_bytes() == (src / name).read_bytes()


def test_not_enough_space_is_refused_before_copying(tmp_path, monkeypatch):
    src = _source(tmp_path)
    dst = tmp_path / "local"
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: SimpleNamespace(free=5000))
    # 9 samples of 1000 + 100 i bytes and a 5-byte stats.h5
    with pytest.raises(StagingError, match=rf"^{dst}: not enough space to stage 10 files: they "
                                           r"need 12.6 kB, 5.0 kB is free"):
        stage_files(src, dst)
    assert os.listdir(dst) == []


def test_running_out_of_space_while_copying(tmp_path, monkeypatch):
    src = _source(tmp_path)
    dst = tmp_path / "local"
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Full(f) if "partial" in str(path) else f

    monkeypatch.setattr(staging, "open", full_open, raising=False)
    with pytest.raises(StagingError, match=rf"^{dst}: out of space while copying .*data-"):
        stage_files(src, dst, workers=1)
    assert [n for n in os.listdir(dst) if not n.startswith(".")] == []
    assert not [n for n in os.listdir(dst) if "partial" in n]


def test_command_uses_the_launchers_rank(tmp_path, monkeypatch, capsys):
    src = _source(tmp_path, count=6)
    monkeypatch.setenv("HOROVOD_SIZE", "3")
    monkeypatch.setenv("HOROVOD_RANK", "2")
    assert main([str(src), "--to", str(tmp_path / "local"), "-q"]) == 0
    assert "climseg-stage: 2 files in" in capsys.readouterr().err
    expected = shard_for_staging(list_files(src), num_shards=3, shard_index=2)
    assert sorted(list_files(tmp_path / "local")) == sorted(
        str(tmp_path / "local" / os.path.basename(p)) for p in expected)
    assert main([str(src), "--to", str(tmp_path / "x"), "--oversample", "9"]) == 2
    assert "oversample=9.0; expected 1 <= oversample <= num_shards (3)" in capsys.readouterr().err


def test_real_full_disk_refused_up_front_then_enospc_mid_copy(tmp_path, small_disk, monkeypatch):
    src = tmp_path / "big"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        (src / f"data-{i}.h5").write_bytes(rng.bytes(900_000))
    with pytest.raises(StagingError, match=rf"^{small_disk}: not enough space to stage 3 files: "
                                           r"they need 2.7 MB, 2.\d MB is free"):
        stage_files(src, small_disk)
    assert os.listdir(small_disk) == []
    # If the check is fooled (another process fills the disk meanwhile), the
    # kernel's ENOSPC is caught: the files already staged stay valid, the
    # half-written one is removed.
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**12))
    with pytest.raises(StagingError, match=rf"^{small_disk}: out of space while copying "):
        stage_files(src, small_disk, workers=1)
    assert not [n for n in os.listdir(small_disk) if "partial" in n]
    staged = list_files(small_disk)
    assert len(staged) == 2
    for path in staged:
        assert open(path, "rb").read() == (src / os.path.basename(path)).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--num-shards", "0"], "argument --num-shards: expected an integer >= 1, got 0"),
    (["--oversample", "nan"], "argument --oversample: expected a finite number, got nan"),
    (["--shard-index", "-1"], "argument --shard-index: expected an integer >= 0, got -1"),
])
def test_stage_numbers_are_checked_where_parsed(tmp_path, argv, message, capsys):
    from data.staging import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--to", str(tmp_path / "stage"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
