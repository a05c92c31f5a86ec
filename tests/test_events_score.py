"""events.score: found tracks matched one-to-one by overlap to the true tracks of a sequence."""

import csv
import math
import os

import numpy as np
import pytest
import xarray as xr

from events.cli import main
from events.score import TrackScore


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    from data.sequence import generate_sequence

    return generate_sequence(tmp_path_factory.mktemp("sequence"), 24, 48, 96, seed=3)


def _score_rows(out):
    with open(out / "score.csv") as f:
        return {r["class"]: r for r in csv.DictReader(f)}


def _counts(row):
    return tuple(int(row[k]) for k in ("true_tracks", "found_tracks", "matched", "misses",
                                       "false_alarms"))


def _true_tracks(paths):
    """{track: class} of the sequence's TRACK_ID and LABELS."""
    out = {}
    for path in paths:
        with xr.open_dataset(path) as ds:
            ids, labels = ds["TRACK_ID"].values, ds["LABELS"].values
            for track in np.unique(ids[ids > 0]).tolist():
                out[track] = int(labels[ids == track][0])
    return out


def test_the_truth_scored_against_itself_matches_every_track(sequence, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", *sequence, "--variable", "LABELS", "--truth", *sequence,
                 "--output-dir", str(out)]) == 0
    true = _true_tracks(sequence)
    rows = _score_rows(out)
    for class_id, name in ((1, "tropical_cyclone"), (2, "atmospheric_river")):
        n = sum(c == class_id for c in true.values())
        assert n >= 2
        assert _counts(rows[name]) == (n, n, n, 0, 0)
        assert (float(rows[name]["pod"]), float(rows[name]["far"])) == (1.0, 0.0)
    printed = capsys.readouterr().out
    n = sum(c == 1 for c in true.values())
    assert (f"{n} tropical cyclone tracks found, {n} true: {n} matched, 0 false alarms, "
            "0 misses (POD 1.00, FAR 0.00)") in printed
    with open(out / "matches.csv") as f:
        matches = list(csv.DictReader(f))
    assert sorted(int(m["true_track"]) for m in matches) == sorted(true)
    assert all(m["overlap_pixels"] == m["true_pixels"] == m["found_pixels"] for m in matches)


def _free_box(labels, steps, size=4, margin=3):
    """(row, col) of a size x size box with no label within `margin` at `steps`."""
    busy = (labels[steps] > 0).any(axis=0)
    rows, cols = busy.shape
    for r in range(margin, rows - size - margin):
        for c in range(margin, cols - size - margin):
            if not busy[r - margin:r + size + margin, c - margin:c + size + margin].any():
                return r, c
    raise AssertionError("no free box")


def test_one_track_removed_and_one_blob_added_give_one_miss_and_one_false_alarm(
        sequence, tmp_path):
    true = _true_tracks(sequence)
    removed = max(t for t, c in true.items() if c == 1)  # a cyclone born after the first step
    edited = tmp_path / "edited"
    edited.mkdir()
    blob_steps = [3, 4, 5]  # of the first file
    for n, path in enumerate(sequence):
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        labels = ds["LABELS"].values.copy()
        labels[ds["TRACK_ID"].values == removed] = 0
        if n == 0:
            r, c = _free_box(labels, blob_steps)
            for t in blob_steps:
                labels[t, r:r + 4, c + t - 3:c + t + 1] = 1  # a cyclone nobody saw, moving east
        ds["LABELS"] = ds["LABELS"].copy(data=labels)
        ds.to_netcdf(edited / os.path.basename(path))
    out = tmp_path / "out"
    assert main(["--input", str(edited), "--variable", "LABELS", "--truth", *sequence,
                 "--output-dir", str(out)]) == 0
    rows = _score_rows(out)
    cyclones = sum(c == 1 for c in true.values())
    rivers = sum(c == 2 for c in true.values())
    assert _counts(rows["tropical_cyclone"]) == (cyclones, cyclones, cyclones - 1, 1, 1)
    assert _counts(rows["atmospheric_river"]) == (rivers, rivers, rivers, 0, 0)
    assert float(rows["tropical_cyclone"]["far"]) == pytest.approx(1 / cyclones)
    with open(out / "matches.csv") as f:
        assert removed not in {int(m["true_track"]) for m in csv.DictReader(f)}


def test_a_split_track_matches_once_by_the_largest_overlap():
    # One true cyclone (7) over two steps, found as two tracks: 5 covers 6 of its
    # pixels, 9 the other 2. A true river (8) found as a cyclone (11) matches nothing:
    # the classes must agree.
    true_classes = np.zeros((2, 4, 6), np.int8)
    true_ids = np.zeros((2, 4, 6), np.int32)
    true_classes[:, 0, :4], true_ids[:, 0, :4] = 1, 7
    true_classes[:, 3, :], true_ids[:, 3, :] = 2, 8
    found_classes = np.zeros_like(true_classes)
    found_ids = np.zeros_like(true_ids)
    found_classes[:, 0, :3], found_ids[:, 0, :3] = 1, 5
    found_classes[:, 0, 3], found_ids[:, 0, 3] = 1, 9
    found_classes[:, 3, :], found_ids[:, 3, :] = 1, 11
    score, strict = TrackScore(), TrackScore(min_overlap=7)
    for t in range(2):
        for s in (score, strict):
            s.add(found_classes[t], found_ids[t], true_classes[t], true_ids[t])
    assert score.matches() == {5: 7}
    tc, ar = score.summary()
    assert (tc["true_tracks"], tc["found_tracks"], tc["matched"], tc["misses"],
            tc["false_alarms"]) == (1, 3, 1, 0, 2)
    assert (ar["true_tracks"], ar["found_tracks"], ar["matched"], ar["misses"]) == (1, 0, 0, 1)
    assert ar["pod"] == 0.0 and math.isnan(ar["far"])
    assert score.match_rows() == [{"class": "tropical_cyclone", "true_track": 7,
                                   "found_track": 5, "overlap_pixels": 6, "true_pixels": 8,
                                   "found_pixels": 6}]
    assert strict.matches() == {}  # 6 shared pixels < 7
    with pytest.raises(ValueError, match=r"min_overlap=0; expected an integer >= 1"):
        TrackScore(min_overlap=0)


def test_truth_without_the_masks_steps_is_named(sequence, tmp_path, capsys):
    assert main(["--input", *sequence, "--variable", "LABELS", "--truth", sequence[0],
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"climseg-events: error: --truth: {sequence[0]}: the truth files hold no step at "
        "2106-01-02 00:00:00 (16 of the masks' 24 steps missing); expected every time of "
        "the masks\n")
    with xr.open_dataset(sequence[0]) as ds:
        ds.drop_vars("TRACK_ID").to_netcdf(tmp_path / "no-ids.nc")
    assert main(["--input", sequence[0], "--truth", str(tmp_path / "no-ids.nc"),
                 "--output-dir", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.startswith(
        f"climseg-events: error: --truth: {tmp_path / 'no-ids.nc'}: has no TRACK_ID; found ")
