"""data.stats: stats.h5 in both published forms, computing it, normalization, class frequencies."""

import h5py
import numpy as np
import pytest

from data.errors import BadFileLog, DataFileError
from data.stats import (
    Stats,
    class_frequencies,
    compute_stats,
    main,
    normalize,
    normalizer,
    read_stats,
    write_stats,
)

H, W = 12, 20


def _write_files(directory, count=5, seed=0):
    rng = np.random.default_rng(seed)
    datas, labels = [], []
    for i in range(count):
        data = (rng.normal(size=(H, W, 16)) * np.arange(1, 17) + 100 * i).astype(np.float32)
        label = rng.choice(3, size=(H, W), p=[0.9, 0.03, 0.07]).astype(np.int32)
        with h5py.File(directory / f"data-{i}.h5", "w") as f:
            f["climate/data"] = data
            f["climate/labels_0"] = label
        datas.append(data)
        labels.append(label)
    return np.stack(datas), np.stack(labels)


def test_compute_stats_matches_numpy_over_all_files(tmp_path):
    data, labels = _write_files(tmp_path)
    stats = compute_stats(tmp_path, workers=2)
    flat = data.reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(stats.minval, flat.min(0))
    np.testing.assert_allclose(stats.maxval, flat.max(0))
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, flat.std(0), rtol=1e-5)
    np.testing.assert_array_equal(stats.class_counts, np.bincount(labels.ravel(), minlength=3))


def test_write_then_read_both_forms_round_trip(tmp_path):
    stats = Stats(minval=np.arange(16.0), maxval=np.arange(16.0) + 2, mean=np.arange(16.0) + 1,
                  std=np.full(16, 0.5), class_counts=np.array([970, 5, 25]))
    path = tmp_path / "stats.h5"
    write_stats(path, stats)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["climate/stats"][:, 1], stats.maxval)  # mean,max,min,std
        np.testing.assert_array_equal(f["climate/minval"][...], stats.minval)
    back = read_stats(path)
    for name in ("minval", "maxval", "mean", "std", "class_counts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
    np.testing.assert_allclose(class_frequencies(path), [0.97, 0.005, 0.025])


def test_deepcam_form_gives_minmax_only(tmp_path):
    path = tmp_path / "stats.h5"
    with h5py.File(path, "w") as f:
        f["climate/minval"] = np.full(16, -2.0, np.float32)
        f["climate/maxval"] = np.full(16, 2.0, np.float32)
    offset, scale = normalizer(path, "minmax", channels="TMQ,PSL")
    np.testing.assert_array_equal(offset, [-2.0, -2.0])
    np.testing.assert_array_equal(scale, [0.25, 0.25])
    with pytest.raises(DataFileError, match=rf"^{path}: has no mean and std .*z-score"):
        normalizer(path, "zscore")
    with pytest.raises(DataFileError, match=rf"^{path}: holds no class counts"):
        class_frequencies(path)


def test_sc18_form_zscore(tmp_path):
    path = tmp_path / "stats.h5"
    table = np.stack([np.arange(16.0), np.full(16, 9.0), np.full(16, -9.0), np.arange(1, 17.0)], 1)
    with h5py.File(path, "w") as f:
        f["climate/stats"] = table
        f["climate/labels_stats"] = np.array([90, 1, 9])
    offset, scale = normalizer(path, "zscore", channels=[3, 15])
    np.testing.assert_array_equal(offset, [3.0, 15.0])
    np.testing.assert_allclose(scale, [1 / 4, 1 / 16])
    np.testing.assert_allclose(class_frequencies(path), [0.9, 0.01, 0.09])


def test_mlperf_deepcam_form_allows_zscore(tmp_path):
    # As MLPerf HPC DeepCAM's own statistics: count, mean, sqmean, minval, maxval.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 16)) * np.arange(1, 17) + np.arange(16) * 10
    path = tmp_path / "stats.h5"
    with h5py.File(path, "w") as f:
        f["climate/count"] = np.int64(len(x))
        f["climate/mean"] = x.mean(0).astype(np.float32)
        f["climate/sqmean"] = (x ** 2).mean(0).astype(np.float32)
        f["climate/minval"] = x.min(0).astype(np.float32)
        f["climate/maxval"] = x.max(0).astype(np.float32)
    offset, scale = normalizer(path, "zscore", channels="TMQ,PSL")
    np.testing.assert_allclose(offset, x.mean(0)[[0, 7]], rtol=1e-6)
    np.testing.assert_allclose(scale, 1 / x.std(0)[[0, 7]], rtol=1e-3)
    offset, scale = normalizer(path, "minmax")
    np.testing.assert_allclose(offset, x.min(0), rtol=1e-6)


def test_paper_summarize_stats_form_with_counts_per_label_set(tmp_path):
    # The paper's summarize_stats.py: climate/stats (16, 4) and a (2, 3) float32
    # labels_stats, one row per label set (mean pixels per file of each class).
    path = tmp_path / "stats.h5"
    table = np.stack([np.zeros(16), np.full(16, 9.0), np.full(16, -9.0), np.ones(16)], 1)
    with h5py.File(path, "w") as f:
        f["climate/stats"] = table.astype(np.float32)
        f["climate/labels_stats"] = np.array([[80, 5, 15], [60, 10, 30]], np.float32)
    stats = read_stats(path)
    assert stats.class_counts.shape == (2, 3)
    np.testing.assert_allclose(class_frequencies(stats), [0.8, 0.05, 0.15])
    np.testing.assert_allclose(class_frequencies(stats, "labels_1"), [0.6, 0.1, 0.3])
    np.testing.assert_allclose(class_frequencies(stats, "random"), [0.7, 0.075, 0.225])
    with h5py.File(path, "r+") as f:
        del f["climate/labels_stats"]
        f["climate/labels_stats"] = np.ones((2, 4), np.float32)
    with pytest.raises(DataFileError, match=r"labels_stats has shape \(2, 4\); expected \(3,\)"):
        read_stats(path)


def test_missing_and_malformed_stats_files(tmp_path):
    with pytest.raises(DataFileError, match="nope.h5: statistics file not found"):
        read_stats(tmp_path / "nope.h5")
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["climate/minval"] = np.zeros(8)
        f["climate/maxval"] = np.ones(8)
    with pytest.raises(DataFileError, match=r"wrong.h5: climate/minval has shape \(8,\); "
                                            r"expected \(16,\)"):
        read_stats(wrong)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f["other"] = np.zeros(3)
    with pytest.raises(DataFileError, match="empty.h5: holds no statistics: found other"):
        read_stats(empty)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"x" * 100)
    with pytest.raises(DataFileError, match="junk.h5: cannot be opened as HDF5"):
        read_stats(junk)
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["climate/minval"] = np.zeros(16)
        f["climate/maxval"] = np.r_[np.ones(15), 0.0]
    offset, scale = normalizer(flat)  # a constant channel is legal: it normalizes to 0
    assert scale[-1] == 0 and np.all(scale[:-1] == 1)
    x = np.full((2, 3, 16), 5.0, np.float32)
    assert np.all(normalize(x, offset, scale)[..., -1] == 0)
    with h5py.File(flat, "r+") as f:
        f["climate/maxval"][14] = -1.0
    with pytest.raises(DataFileError, match="flat.h5: maxval < minval for channels Z200"):
        normalizer(flat)


def test_bad_file_fails_or_is_skipped_and_reported(tmp_path):
    data, labels = _write_files(tmp_path, count=3)
    with h5py.File(tmp_path / "data-1.h5", "r+") as f:
        f["climate/data"][0, 0, 0] = np.nan
    with pytest.raises(DataFileError, match="data-1.h5: data contain 1 NaN/Inf"):
        compute_stats(tmp_path)
    bad = BadFileLog()
    stats = compute_stats(tmp_path, skip_bad_files=True, bad_files=bad)
    assert [p for p, _ in bad.items()] == [str(tmp_path / "data-1.h5")]
    np.testing.assert_allclose(stats.maxval, data[[0, 2]].reshape(-1, 16).max(0))


def test_empty_directory(tmp_path):
    with pytest.raises(DataFileError, match=rf"^{tmp_path}: directory holds no sample files"):
        compute_stats(tmp_path)


def test_command_writes_stats_next_to_the_files(tmp_path, capsys):
    _, labels = _write_files(tmp_path, count=2)
    assert main([str(tmp_path), "--workers", "2"]) == 0
    stats = read_stats(tmp_path / "stats.h5")
    np.testing.assert_array_equal(stats.class_counts, np.bincount(labels.ravel(), minlength=3))
    captured = capsys.readouterr()
    assert "climseg-stats: 2/2 files" in captured.err
    assert f"wrote {tmp_path / 'stats.h5'}" in captured.out
    # A second run must not count stats.h5 itself as a sample.
    assert main([str(tmp_path), "-q"]) == 0
    assert "error" not in capsys.readouterr().err


def test_normalize_in_place_equals_broadcasting():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(37, 29, 5)).astype(np.float32)
    offset, scale = rng.normal(size=5).astype(np.float32), rng.uniform(1, 2, 5).astype(np.float32)
    expected = (data - offset) * scale
    out = normalize(data, offset, scale)
    assert out is data
    np.testing.assert_allclose(data, expected, rtol=1e-6)
