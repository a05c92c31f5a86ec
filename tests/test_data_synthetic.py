"""data.synthetic: CAM5-like samples whose labels follow from their fields, and are learnable."""

import os
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from data.files import num_batches
from data.layouts import CHANNELS, inspect_file, read_sample
from data.pipeline import make_dataset
from data.stats import class_frequencies, compute_stats, read_stats
from data.synthetic import _RULES, generate, label_fields, main, synthesize_sample

H, W = 96, 144
_C = {name: i for i, name in enumerate(CHANNELS)}


@pytest.fixture(scope="module")
def samples():
    return [synthesize_sample(np.random.default_rng([0, i]), H, W) for i in range(8)]


def test_files_names_layout_and_stats(tmp_path):
    paths = generate(tmp_path, 3, H, W, seed=5)
    assert [os.path.basename(p) for p in paths] == [
        "data-2106-01-01-00-1.h5", "data-2106-01-01-03-1.h5", "data-2106-01-01-06-1.h5"]
    assert inspect_file(paths[0]) == ("deepcam", H, W, ("labels_0", "labels_1"), 1)
    stats, expected = read_stats(tmp_path / "stats.h5"), compute_stats(paths)
    np.testing.assert_allclose(stats.maxval, expected.maxval, rtol=1e-6)
    np.testing.assert_array_equal(stats.class_counts, expected.class_counts)


def test_deterministic_by_seed_and_independent_of_file_count(tmp_path):
    a = generate(tmp_path / "a", 3, H, W, seed=1, stats=False)
    b = generate(tmp_path / "b", 2, H, W, seed=1, stats=False, workers=2)
    c = generate(tmp_path / "c", 1, H, W, seed=2, stats=False)
    for pa, pb in zip(a, b, strict=False):
        np.testing.assert_array_equal(read_sample(pa)[0], read_sample(pb)[0])
    assert not np.array_equal(read_sample(a[0])[0], read_sample(c[0])[0])


def test_labels_are_the_threshold_rules_applied_to_the_fields(tmp_path):
    path = generate(tmp_path, 1, H, W, seed=3, stats=False)[0]
    with h5py.File(path) as f:
        data = f["climate/data"][...]
        for name, rule in _RULES.items():
            np.testing.assert_array_equal(f[f"climate/{name}"][...], label_fields(data, **rule))
    # Checked independently for labels_0: a cyclone pixel has a deep low and moist air.
    labels = read_sample(path)[1]
    tc = labels == 1
    assert tc.any() and (data[..., _C["PSL"]][tc] < 99200).all()
    assert (data[..., _C["TMQ"]][tc] > 35).all()


def test_class_fractions_near_the_real_ones(samples):
    fractions = np.array([np.bincount(labels["labels_0"].ravel(), minlength=3) / (H * W)
                          for _, labels in samples]).mean(axis=0)
    assert 0.95 < fractions[0] < 0.99
    assert 0.001 < fractions[1] < 0.005
    assert 0.01 < fractions[2] < 0.03


def test_value_ranges_are_plausible(samples):
    data = np.stack([d for d, _ in samples])
    ranges = {"TMQ": (0, 100), "U850": (-90, 90), "V850": (-90, 90), "QREFHT": (0, 0.04),
              "PS": (85000, 106000), "PSL": (88000, 106000), "T200": (190, 240),
              "T500": (220, 290), "PRECT": (0, 2e-5), "TS": (220, 320), "TREFHT": (220, 320),
              "Z1000": (-1200, 500), "Z200": (10000, 13000), "ZBOT": (40, 80)}
    for name, (low, high) in ranges.items():
        channel = data[..., _C[name]]
        assert low <= channel.min() and channel.max() <= high, name
    # Moist tropics, dry poles.
    tmq = data[..., _C["TMQ"]].mean(axis=(0, 2))
    assert tmq[H // 2] > 35 > 10 > tmq[0]


def test_cyclones_are_cyclonic_and_warm_cored(samples):
    lat = (np.arange(H) + 0.5) * 180.0 / H - 90.0
    for data, labels in samples:
        tc = labels["labels_0"] == 1
        u, v = data[..., _C["U850"]], data[..., _C["V850"]]
        vorticity = np.gradient(v, axis=1) - np.gradient(u, axis=0)  # x east, y north
        north, south = tc & (lat[:, None] > 0), tc & (lat[:, None] < 0)
        if north.any():
            assert vorticity[north].mean() > 0
        if south.any():
            assert vorticity[south].mean() < 0
        t500 = data[..., _C["T500"]]
        zonal = np.median(t500, axis=1, keepdims=True)
        assert (t500 - zonal)[tc].mean() > 1.0


def test_rivers_reach_from_subtropics_to_mid_latitudes(samples):
    lat = np.abs((np.arange(H) + 0.5) * 180.0 / H - 90.0)
    ar_lat = np.concatenate([np.broadcast_to(lat[:, None], (H, W))[labels["labels_0"] == 2]
                             for _, labels in samples])
    assert ar_lat.min() < 25 and ar_lat.max() > 45
    assert np.percentile(ar_lat, 5) > 10 and np.percentile(ar_lat, 95) < 70


def test_small_sample_generates_fast():
    times = []
    for i in range(5):
        start = time.perf_counter()
        synthesize_sample(np.random.default_rng(i), H, W)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.25


def test_command_writes_files_and_stats(tmp_path, capsys):
    assert main([str(tmp_path), "-n", "2", "--height", "32", "--width", "48", "-q"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["data-2106-01-01-00-1.h5", "data-2106-01-01-03-1.h5",
                                            "stats.h5"]
    assert read_sample(tmp_path / "data-2106-01-01-03-1.h5")[0].shape == (32, 48, 16)


def test_command_writes_deepcams_layout_which_climseg_reads_back(tmp_path):
    from data.training_set import prepare_training_set

    assert main([str(tmp_path), "-n", "3", "--validation", "2", "--height", "16", "--width",
                 "24", "-q"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["stats.h5", "train", "validation"]
    # DeepCAM's loader takes every *.h5 of train/ and validation/: no stats.h5 among them.
    assert [len(os.listdir(tmp_path / d)) for d in ("train", "validation")] == [3, 2]
    with h5py.File(tmp_path / "stats.h5") as f:  # what DeepCAM's loader reads
        for name in ("mean", "sqmean", "minval", "maxval"):
            assert f[f"climate/{name}"].shape == (16,) and f[f"climate/{name}"].dtype == "f4"
        assert f["climate/count"].shape == () and f["climate/count"][()] == 3 * 16 * 24
        mean, sqmean = f["climate/mean"][...], f["climate/sqmean"][...]
    fields = np.stack([read_sample(p)[0] for p in sorted((tmp_path / "train").iterdir())])
    np.testing.assert_allclose(mean, fields.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.sqrt(sqmean - mean.astype(np.float64) ** 2),
                               fields.std(axis=(0, 1, 2)), rtol=2e-3)
    assert read_stats(tmp_path / "stats.h5").std is not None
    train_set = prepare_training_set([str(tmp_path / "train")], [str(tmp_path / "validation")],
                                     batch_size=1)
    assert train_set.stats_path == os.path.abspath(tmp_path / "stats.h5")
    assert (len(train_set.train_files), len(train_set.val_files)) == (3, 2)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "-n", "1", "--validation", "0"])


@pytest.mark.slow
def test_a_small_network_learns_the_labels(tmp_path):
    generate(tmp_path / "train", 32, H, W, seed=0)
    generate(tmp_path / "val", 8, H, W, seed=1, stats=False)
    stats = tmp_path / "train" / "stats.h5"
    weights = 1 / np.sqrt(class_frequencies(stats))  # SC18's loss weights
    weights = tf.constant(weights / weights.sum(), tf.float32)
    train = make_dataset(tmp_path / "train", 8, training=True, stats=stats, augment=True)
    val = make_dataset(tmp_path / "val", 8, training=False, stats=stats)

    inputs = tf.keras.Input((H, W, 16))
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(3, 1)(h))

    def weighted_loss(labels, logits):
        labels = tf.cast(labels, tf.int32)
        pixel = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return tf.reduce_mean(pixel * tf.gather(weights, labels))

    model.compile(tf.keras.optimizers.Adam(3e-3), weighted_loss)
    model.fit(train, epochs=20, steps_per_epoch=num_batches(tmp_path / "train", 8, training=True),
              verbose=0)
    confusion = np.zeros((3, 3))
    for x, y in val:
        predicted = tf.argmax(model(x), axis=-1).numpy()
        confusion += np.bincount(3 * y.numpy().ravel() + predicted.ravel(),
                                 minlength=9).reshape(3, 3)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    # Predicting background everywhere gives 0 for both events.
    assert iou[1] > 0.3 and iou[2] > 0.3, iou


@pytest.mark.parametrize("sequence", [False, True])
def test_a_full_disk_is_one_line_and_the_files_written_stay_whole(small_disk, sequence, capsys):
    from data.synthetic import main

    out = small_disk / "set"
    args = [str(out), "-n", "40", "--height", "64", "--width", "96", "-q", "--no-stats"]
    assert main(args + (["--sequence", "--steps-per-file", "1"] if sequence else [])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"climseg-synth: error: cannot write {out}/")
    assert ("is the disk full?" if sequence else "No space left on device") in err
    assert err.endswith("; the files written before are complete\n")
    written = sorted(os.listdir(out))
    assert written and not [n for n in written if n.endswith(".tmp")]  # no partial file
    for name in written:  # every file left is whole
        if sequence:
            import xarray as xr

            with xr.open_dataset(out / name) as ds:
                assert ds["TMQ"].shape == (1, 64, 96)
        else:
            assert inspect_file(str(out / name)).height == 64
