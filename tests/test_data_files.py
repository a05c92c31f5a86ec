"""data.files: listing a data set's files and sharding them over ranks."""

import numpy as np
import pytest

from data.errors import DataFileError
from data.files import list_files, num_batches, shard_files


def _touch(directory, names):
    for name in names:
        (directory / name).write_bytes(b"")
    return [str(directory / name) for name in names]


def test_directory_glob_and_file_lists(tmp_path):
    files = _touch(tmp_path, ["b.h5", "a.h5", "c.nc", "stats.h5", ".a.h5.partial-1", "notes.txt"])
    assert list_files(tmp_path) == [files[1], files[0], files[2]]
    assert list_files(str(tmp_path / "*.h5")) == [files[1], files[0]]
    assert list_files([files[0], files[0], str(tmp_path / "c.nc")]) == [files[0], files[2]]


def test_empty_directory_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(DataFileError, match=rf"^{tmp_path}: directory holds no sample files"):
        list_files(tmp_path)
    with pytest.raises(DataFileError, match="nope: no such file or directory"):
        list_files(tmp_path / "nope")
    with pytest.raises(DataFileError, match=r"\*.h5: pattern matches no sample files"):
        list_files(str(tmp_path / "*.h5"))


@pytest.mark.parametrize("count,shards", [(10, 3), (12, 4), (7, 2)])
def test_training_shards_are_equal_disjoint_and_reshuffled_per_epoch(count, shards):
    files = [f"f{i}" for i in range(count)]
    epoch0 = [shard_files(files, training=True, num_shards=shards, shard_index=i, seed=3)
              for i in range(shards)]
    assert all(len(part) == count // shards for part in epoch0)
    flat = sum(epoch0, [])
    assert len(set(flat)) == len(flat) == count // shards * shards
    epoch1 = shard_files(files, training=True, num_shards=shards, shard_index=0, seed=3, epoch=1)
    assert epoch1 != epoch0[0]
    assert epoch0[0] == shard_files(files, training=True, num_shards=shards, seed=3)
    order = np.random.default_rng([3, 0]).permutation(count)
    assert epoch0[1] == [files[i] for i in order[1::shards][:count // shards]]


def test_validation_shards_read_every_file_exactly_once():
    files = [f"f{i}" for i in range(11)]
    parts = [shard_files(files, training=False, num_shards=4, shard_index=i) for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(files)
    assert [len(p) for p in parts] == [3, 3, 3, 2]
    assert [num_batches(11, 2, training=False, num_shards=4, shard_index=i) for i in range(4)] \
        == [2, 2, 2, 1]
    assert num_batches(11, 2, training=True, num_shards=4, shard_index=3) == 1


def test_shard_arguments_are_checked():
    with pytest.raises(ValueError, match="shard_index=2; expected 0..1"):
        shard_files(["a"], training=True, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="batch_size=0; expected an integer >= 1"):
        num_batches(4, 0, training=True)


def test_a_broken_link_is_an_error_or_a_skipped_file(tmp_path):
    from data.errors import BadFileLog
    from data.staging import main as stage

    (tmp_path / "data-1.h5").write_bytes(b"x")
    link = tmp_path / "data-0.h5"
    link.symlink_to(tmp_path / "gone.h5")
    with pytest.raises(DataFileError) as err:
        list_files(tmp_path)
    assert str(err.value) == (f"{link}: a broken symbolic link (to {tmp_path / 'gone.h5'}); "
                              "fix or remove it, or give --skip-bad-files")
    bad = BadFileLog()
    assert list_files(tmp_path, bad_files=bad) == [str(tmp_path / "data-1.h5")]
    assert bad.items() == [(str(link), f"a broken symbolic link (to {tmp_path / 'gone.h5'})")]
    # A file listed, then deleted: an error, or skipped.
    assert list_files([str(tmp_path / "data-1.h5"), str(tmp_path / "nope.h5")],
                      bad_files=bad) == [str(tmp_path / "data-1.h5")]
    assert stage([str(tmp_path), "--to", str(tmp_path / "stage"), "-q"]) == 1
    assert stage([str(tmp_path), "--to", str(tmp_path / "stage"), "-q", "--skip-bad-files"]) == 0
