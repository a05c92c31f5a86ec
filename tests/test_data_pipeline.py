"""data.pipeline: files to (inputs, labels) batches, sharded, shuffled, normalized, augmented."""

import h5py
import numpy as np
import pytest
import tensorflow as tf

from data.errors import BadFileLog, DataFileError
from data.files import num_batches, shard_files
from data.pipeline import make_dataset, usable_files
from data.stats import Stats, write_stats
from data.synthetic import generate, label_fields

H, W = 8, 12


def _write(directory, count, seed=0):
    """Files whose channel 0 holds the file's number everywhere, to identify samples."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        data = rng.normal(size=(H, W, 16)).astype(np.float32)
        data[..., 0] = i
        path = directory / f"data-{i:03d}.h5"
        with h5py.File(path, "w") as f:
            f["climate/data"] = data
            f["climate/labels_0"] = np.full((H, W), i % 3, np.int32)
            f["climate/labels_1"] = np.full((H, W), (i + 1) % 3, np.int32)
        paths.append(str(path))
    return paths


def _ids(dataset, limit=None):
    ids = []
    for x, _ in dataset.take(limit) if limit else dataset:
        ids.append([int(v) for v in x.numpy()[:, 0, 0, 0]])
    return ids


def test_batches_equal_numpy_normalization_of_selected_channels(tmp_path):
    paths = _write(tmp_path, 6)
    stats = Stats(minval=np.linspace(-3, 0, 16), maxval=np.linspace(1, 5, 16),
                  mean=np.zeros(16), std=np.ones(16))
    write_stats(tmp_path / "stats.h5", stats)
    dataset = make_dataset(tmp_path, 4, training=False, stats=tmp_path / "stats.h5",
                           channels="PSL,TMQ")
    batches = list(dataset)
    assert [b[0].shape for b in batches] == [(4, H, W, 2), (2, H, W, 2)]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    with h5py.File(paths[5]) as f:
        raw = f["climate/data"][...][..., [7, 0]]
        labels = f["climate/labels_0"][...]
    expected = (raw - stats.minval[[7, 0]]) / (stats.maxval[[7, 0]] - stats.minval[[7, 0]])
    np.testing.assert_allclose(batches[1][0][1], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batches[1][1][1], labels)
    zscored = next(iter(make_dataset(paths, 6, training=False, stats=stats,
                                     normalization="zscore")))[0]
    np.testing.assert_allclose(zscored[0, ..., 0], 0.0)  # (0 - mean 0) / std 1


def test_validation_shards_together_read_every_sample_once(tmp_path):
    _write(tmp_path, 11)
    seen = []
    for shard in range(3):
        dataset = make_dataset(tmp_path, 2, training=False, num_shards=3, shard_index=shard)
        ids = _ids(dataset)
        assert len(ids) == dataset.cardinality() == num_batches(11, 2, training=False,
                                                                num_shards=3, shard_index=shard)
        seen += sum(ids, [])
    assert sorted(seen) == list(range(11))


def test_training_shards_get_equal_batches_and_a_new_order_each_epoch(tmp_path):
    paths = _write(tmp_path, 14)
    steps = num_batches(paths, 2, training=True, num_shards=3)
    assert steps == 2  # 14 // 3 = 4 files per shard and epoch, 2 batches of 2
    per_shard = []
    for shard in range(3):
        dataset = make_dataset(tmp_path, 2, training=True, num_shards=3, shard_index=shard, seed=7)
        ids = sum(_ids(dataset, 3 * steps), [])
        expected = sum((shard_files(range(14), training=True, num_shards=3, shard_index=shard,
                                    seed=7, epoch=e) for e in range(3)), [])
        assert ids == expected
        per_shard.append([ids[4 * e:4 * e + 4] for e in range(3)])
    for epoch in range(3):  # Within an epoch the shards read different files.
        flat = sum((per_shard[s][epoch] for s in range(3)), [])
        assert len(set(flat)) == 12
    assert per_shard[0][0] != per_shard[0][1]
    resumed = make_dataset(tmp_path, 2, training=True, num_shards=3, seed=7, initial_epoch=1)
    assert sum(_ids(resumed, steps), []) == per_shard[0][1]
    # Resumed mid-epoch at global batch 3: the uninterrupted stream from there on.
    resumed = make_dataset(tmp_path, 2, training=True, num_shards=3, seed=7, initial_epoch=1,
                           initial_batch=1)
    assert sum(_ids(resumed, 3), []) == sum(per_shard[0], [])[2 * 3:2 * 6]
    with pytest.raises(ValueError, match="initial_batch=2; expected 0 <= initial_batch < 2"):
        make_dataset(tmp_path, 2, training=True, num_shards=3, initial_batch=2)


def test_random_label_set_is_reproducible(tmp_path):
    _write(tmp_path, 6)

    def labels():
        dataset = make_dataset(tmp_path, 6, training=False, label_set="random", seed=4)
        return [int(y[0, 0]) for y in next(iter(dataset))[1]]

    first = labels()
    assert first == labels()
    from_set0 = [int(i % 3 == v) for i, v in enumerate(first)]
    assert 0 < sum(from_set0) < 6  # both label sets drawn


def test_augmented_labels_still_follow_the_fields(tmp_path):
    generate(tmp_path, 4, 32, 48, seed=2, stats=False)
    plain = next(iter(make_dataset(tmp_path, 4, training=True)))
    augmented = next(iter(make_dataset(tmp_path, 4, training=True, augment=True)))
    changed = 0
    for x, y in zip(augmented[0].numpy(), augmented[1].numpy(), strict=True):
        np.testing.assert_array_equal(
            y, label_fields(x, tc_psl=99200.0, tc_tmq=35.0, ar_ivt=700.0, ar_tmq=22.0,
                            low_psl=100300.0, low_tmq=35.0))
    for a, b in zip(augmented[0].numpy(), plain[0].numpy(), strict=True):
        changed += not np.array_equal(a, b)
        assert sorted(a[..., 7].ravel().tolist()) == sorted(b[..., 7].ravel().tolist())
    assert changed >= 3


def test_batches_held_by_the_caller_are_not_overwritten_by_later_ones(tmp_path):
    # The pipeline reuses a batch's memory once nothing refers to it: batches
    # still held (as tensors or as numpy views of them) must keep their samples.
    _write(tmp_path, 6)
    dataset = make_dataset(tmp_path, 2, training=True, seed=5)
    held = [x for x, _ in dataset.take(9)]
    views = [x.numpy() for x in held[:3]]
    expected = [shard_files(range(6), training=True, seed=5, epoch=e) for e in range(3)]
    assert [int(v) for x in held for v in x[:, 0, 0, 0]] == sum(expected, [])
    assert [int(v) for x in views for v in x[:, 0, 0, 0]] == expected[0]
    del held, views
    again = [int(v) for x, _ in dataset.take(9) for v in x.numpy()[:, 0, 0, 0]]
    assert again == sum(expected, [])


def test_bad_file_stops_iteration_with_its_name(tmp_path):
    paths = _write(tmp_path, 3)
    with h5py.File(paths[1], "r+") as f:
        f["climate/data"][0, 0, 3] = np.inf
    dataset = make_dataset(tmp_path, 1, training=False)
    with pytest.raises(tf.errors.OpError, match=rf"{paths[1]}: data contain 1 NaN/Inf"):
        list(dataset)


def test_skip_bad_files_skips_counts_and_reports_each_kind(tmp_path):
    paths = _write(tmp_path, 8)
    with h5py.File(paths[1], "r+") as f:  # NaN
        f["climate/data"][0, 0, 3] = np.nan
    with h5py.File(paths[2], "r+") as f:  # label out of range
        f["climate/labels_0"][0, 0] = 7
    blob = open(paths[3], "rb").read()  # truncated
    open(paths[3], "wb").write(blob[: len(blob) // 3])
    with h5py.File(paths[4], "w") as f:  # other grid size
        f["climate/data"] = np.zeros((H, W + 1, 16), np.float32)
        f["climate/labels_0"] = np.zeros((H, W + 1), np.int32)
    with h5py.File(paths[5], "w") as f:  # unknown layout
        f["fields"] = np.zeros(3)
    bad = BadFileLog()
    dataset = make_dataset(tmp_path, 2, training=False, skip_bad_files=True, bad_files=bad)
    # Validation keeps all 4 batches (ranks stay in step); skipped samples are zeros of weight 0.
    batches = [(x.numpy(), y.numpy(), w.numpy()) for x, y, w in dataset]
    assert len(batches) == 4 == int(dataset.cardinality())
    weights = np.concatenate([w[:, 0, 0] for _, _, w in batches])
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, 0, 0, 1, 1])
    ids = np.concatenate([x[:, 0, 0, 0] for x, _, _ in batches])
    assert ids[weights == 1].tolist() == [0, 6, 7]
    for x, y, w in batches:
        assert np.all(x[w[:, 0, 0] == 0] == 0) and np.all(y[w[:, 0, 0] == 0] == 0)
        assert np.all(w == w[:, :1, :1])  # one weight per sample
    problems = dict(bad.items())
    assert sorted(problems) == paths[1:6]
    assert "NaN/Inf" in problems[paths[1]]
    assert "outside the class range" in problems[paths[2]]
    assert "grid is 8x13, but the other files' is 8x12" in problems[paths[4]]
    assert "no known layout" in problems[paths[5]]
    assert bad.report().startswith("skipped 5 bad files:")
    train = make_dataset(tmp_path, 2, training=True, skip_bad_files=True, bad_files=bad)
    assert all(i in (0, 6, 7) for i in sum(_ids(train, 6), []))


def test_shape_mismatch_and_empty_directory_without_skipping(tmp_path):
    paths = _write(tmp_path, 2)
    with h5py.File(paths[1], "w") as f:
        f["climate/data"] = np.zeros((H + 2, W, 16), np.float32)
        f["climate/labels_0"] = np.zeros((H + 2, W), np.int32)
    with pytest.raises(DataFileError, match=rf"{paths[1]}: grid is 10x12, but the other files' "
                                            r"is 8x12 \(1 of 2 files\)"):
        make_dataset(tmp_path, 1, training=False)  # before any reading
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="empty: directory holds no sample files"):
        make_dataset(tmp_path / "empty", 1, training=True)
    with pytest.raises(ValueError, match="2 samples give no full batch of 2 on each of 2 shards"):
        make_dataset(tmp_path, 2, training=True, num_shards=2)


def test_fit_runs_on_the_training_dataset(tmp_path):
    _write(tmp_path, 4)
    dataset = make_dataset(tmp_path, 2, training=True)
    model = tf.keras.Sequential([tf.keras.Input((H, W, 16)), tf.keras.layers.Conv2D(3, 1)])
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=2, steps_per_epoch=num_batches(tmp_path, 2, training=True),
                        verbose=0)
    assert len(history.history["loss"]) == 2


def test_skipping_stops_when_every_file_is_bad(tmp_path):
    paths = _write(tmp_path, 2)
    for path in paths:
        with h5py.File(path, "r+") as f:
            f["climate/data"][0, 0, 1] = np.nan
    dataset = make_dataset(tmp_path, 1, training=True, skip_bad_files=True)
    with pytest.raises(tf.errors.OpError, match="the last of the 2 samples is bad too"):
        next(iter(dataset))


_HVD_WORKER = """
import sys
import data
import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

hvd.init()
directory = sys.argv[1]
# Horovod: each rank reads its own shard; the seed is the same on all ranks.
kwargs = dict(num_shards=hvd.size(), shard_index=hvd.rank(), seed=3)
val = data.make_dataset(directory, 2, training=False, **kwargs)
train = data.make_dataset(directory, 2, training=True, **kwargs)
steps = data.num_batches(directory, 2, training=True, num_shards=hvd.size())
val_ids = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in val]).astype(np.int64)
train_ids = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in train.take(2 * steps)])
all_val = hvd.allgather(tf.constant(val_ids)).numpy()
all_train = hvd.allgather(tf.constant(train_ids.astype(np.int64)[None])).numpy()
if hvd.rank() == 0:
    np.savez(sys.argv[2], val=all_val, train=all_train, steps=steps)
"""


@pytest.mark.horovod
@pytest.mark.slow
def test_two_horovod_ranks_shard_by_rank(tmp_path):
    from conftest import run_horovod

    _write(tmp_path, 9)
    script = tmp_path / "worker.py"
    script.write_text(_HVD_WORKER)
    run_horovod([script, tmp_path, tmp_path / "out.npz"])
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out["val"].tolist()) == list(range(9))  # validation: each sample once
        steps, train = int(out["steps"]), out["train"]
    assert steps == 2 and train.shape == (2, 2 * steps * 2)
    for epoch in range(2):  # training: same count per rank, disjoint within an epoch
        part = train[:, epoch * 4:(epoch + 1) * 4]
        assert len(set(part.ravel().tolist())) == 8
        assert part[1].tolist() == shard_files(range(9), training=True, num_shards=2,
                                               shard_index=1, seed=3, epoch=epoch)


def test_climatenet_netcdf_files_feed_the_pipeline(tmp_path):
    import h5netcdf

    from data.layouts import CHANNELS

    rng = np.random.default_rng(3)
    fields = rng.normal(size=(2, 16, H, W)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, H, W))
    for i in range(2):
        with h5netcdf.File(tmp_path / f"climatenet-{i}.nc", "w") as f:
            f.dimensions = {"time": 1, "lat": H, "lon": W}
            for c, name in enumerate(CHANNELS):
                variable = f.create_variable(name, ("time", "lat", "lon"), np.float32)
                variable[...] = fields[i, c][None]
            f.create_variable("LABELS", ("lat", "lon"), np.int64)[...] = labels[i]
    x, y = next(iter(make_dataset(tmp_path, 2, training=False, channels="TMQ,PSL")))
    np.testing.assert_array_equal(x, np.moveaxis(fields[:, [0, 7]], 1, -1))
    np.testing.assert_array_equal(y, labels)


def test_usable_files_drops_and_records_bad_ones(tmp_path):
    paths = generate(tmp_path, 4, 16, 24, seed=3, stats=False)
    with open(paths[1], "r+b") as f:  # truncated
        f.truncate(2000)
    with h5py.File(paths[2], "r+") as f:  # NaN in the data
        f["climate/data"][0, 0, 0] = np.nan
    log = BadFileLog()
    assert usable_files(tmp_path, bad_files=log) == [paths[0], paths[3]]
    assert [path for path, _ in log.items()] == sorted([paths[1], paths[2]])
    assert "NaN" in dict(log.items())[paths[2]]
