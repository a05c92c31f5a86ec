"""events: objects that wrap in longitude, their areas, tracks by overlap, climseg-events."""

import csv
import math

import numpy as np
import pytest
import xarray as xr

from events.cli import main
from events.objects import EARTH_RADIUS_KM, Grid, find_objects, label_classes
from events.tracks import Tracker, great_circle_km

LAT = np.arange(-89.0, 90.0, 2.0)  # 90 rows, cell edges every 2 degrees from the pole
LON = np.arange(0.0, 360.0, 2.0)  # 180 columns
GRID = Grid(LAT, LON)


def _mask(*boxes):
    """A mask with class `c` in each (c, row0, row1, col0, col1) box (columns may wrap)."""
    mask = np.zeros((len(LAT), len(LON)), np.uint8)
    for c, r0, r1, c0, c1 in boxes:
        cols = np.arange(c0, c1) % len(LON)
        mask[r0:r1, cols] = c
    return mask


def test_a_latitude_band_is_one_object_with_the_analytic_area():
    rows = (LAT > -10) & (LAT < 10)  # cells from -10 to 10 degrees
    mask = np.zeros((len(LAT), len(LON)), np.uint8)
    mask[rows] = 2
    objects, _ = find_objects(mask, GRID)
    assert len(objects) == 1
    band = 2 * math.pi * EARTH_RADIUS_KM ** 2 * (math.sin(math.radians(10)) * 2)
    assert objects[0].area_km2 == pytest.approx(band, rel=1e-9)
    assert objects[0].lat == pytest.approx(0, abs=1e-9)
    whole = sum(GRID.row_area_km2) * len(LON)
    assert whole == pytest.approx(4 * math.pi * EARTH_RADIUS_KM ** 2, rel=1e-9)


def test_a_storm_across_the_dateline_is_one_object_centred_on_it():
    mask = _mask((1, 40, 45, -3, 3))  # columns 177..179 and 0..2
    labels, count = label_classes(mask, 1)
    assert count == 1 and set(np.unique(labels)) == {0, 1}
    (storm,), _ = find_objects(mask, GRID)
    assert storm.pixels == 30
    assert storm.lon == pytest.approx(359.0)  # the circular mean of 354..4, not 179
    assert (storm.lon_min, storm.lon_max) == (354.0, 4.0)  # east from 354 to 4
    unwrapped, count = label_classes(mask, 1, periodic=False)
    assert count == 2  # without the wrap: two halves


def test_objects_of_each_class_and_the_minimum_area():
    mask = _mask((1, 10, 12, 10, 12), (1, 50, 60, 50, 60), (2, 20, 30, 100, 140))
    objects, _ = find_objects(mask, GRID)
    assert [(o.class_id, o.pixels) for o in objects] == [(1, 4), (1, 100), (2, 400)]
    small = objects[0].area_km2
    kept, _ = find_objects(mask, GRID, min_area_km2=small * 1.01)
    assert [(o.class_id, o.pixels) for o in kept] == [(1, 100), (2, 400)]


def _track(masks):
    tracker, out = Tracker(), []
    for mask in masks:
        objects, labels = find_objects(mask, GRID)
        out.append(list(zip(((o.class_id, o.pixels) for o in objects), tracker.add(objects,
                                                                                  labels),
                            strict=True)))
    return out


def test_a_storm_moving_east_across_the_dateline_is_one_track():
    steps = [_mask((1, 40, 44, 172 + 3 * t, 178 + 3 * t)) for t in range(6)]  # wraps at t>=1
    ids = [[track for _, track in step] for step in _track(steps)]
    assert ids == [[1]] * 6
    assert great_circle_km(0, 359, 0, 1) == pytest.approx(2 * math.pi * EARTH_RADIUS_KM / 180)


def test_splits_and_merges_are_decided_by_overlap():
    before = _mask((1, 10, 20, 10, 30))
    split = _mask((1, 10, 20, 10, 14), (1, 10, 20, 16, 30))  # the east part is larger
    assert [[t for _, t in s] for s in _track([before, split])] == [[1], [2, 1]]
    two = _mask((1, 10, 20, 10, 14), (1, 10, 20, 16, 30))
    merged = _mask((1, 10, 20, 10, 30))
    assert [[t for _, t in s] for s in _track([two, merged])] == [[1, 2], [2]]
    # Classes never link: a river where a cyclone was is a new track.
    assert [[t for _, t in s] for s in _track([before, _mask((2, 10, 20, 10, 30))])] == [[1], [2]]


def _write_masks(path, masks, hours):
    xr.Dataset({"mask": (("time", "lat", "lon"), np.stack(masks).astype(np.int8))},
               coords={"time": ("time", np.asarray(hours, float),
                                {"units": "hours since 2106-01-01", "calendar": "noleap"}),
                       "lat": ("lat", LAT, {"units": "degrees_north"}),
                       "lon": ("lon", LON, {"units": "degrees_east"})}).to_netcdf(path)
    return path


def test_command_writes_events_and_tracks(tmp_path, capsys):
    storm = [_mask((1, 40, 44, 10 + 2 * t, 16 + 2 * t), (2, 60, 62, 0, 180)) for t in range(4)]
    # Two files, given out of time order: the series is ordered by time.
    late = _write_masks(tmp_path / "b.nc", storm[2:], [6, 9])
    early = _write_masks(tmp_path / "a-later-name.nc", storm[:2], [0, 3])
    assert main(["--input", str(late), str(early), "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 tropical cyclone tracks" in out and "1 atmospheric river tracks" in out
    with open(tmp_path / "out" / "tracks.csv") as f:
        tracks = list(csv.DictReader(f))
    cyclone = next(t for t in tracks if t["class"] == "tropical_cyclone")
    assert (cyclone["steps"], float(cyclone["lifetime_hours"])) == ("4", 9.0)
    assert cyclone["start_time"] == "2106-01-01 00:00:00"
    with open(tmp_path / "out" / "events.csv") as f:
        events = list(csv.DictReader(f))
    assert len(events) == 8 and {e["file"] for e in events} == {"a-later-name.nc", "b.nc"}
    path = [(float(e["lat"]), float(e["lon"])) for e in events
            if e["class"] == "tropical_cyclone"]
    assert [e["track_id"] for e in events if e["class"] == "tropical_cyclone"] == ["1"] * 4
    assert [lon for _, lon in path] == pytest.approx([25, 29, 33, 37])  # 2 cells (4 degrees) a step
    moved = sum(great_circle_km(*a, *b) for a, b in zip(path[:-1], path[1:], strict=True))
    assert moved == pytest.approx(3 * 4 * math.pi * EARTH_RADIUS_KM / 180 * math.cos(
        math.radians(path[0][0])), rel=1e-3)
    assert float(cyclone["distance_km"]) == pytest.approx(moved, rel=1e-8)
    assert float(cyclone["mean_speed_kmh"]) == pytest.approx(moved / 9.0, rel=1e-8)

    # The climatology: frequency, genesis and track counts per cell, as numpy counts them.
    with xr.open_dataset(tmp_path / "out" / "climatology.nc") as clim:
        assert list(clim["event"].values) == ["tropical_cyclone", "atmospheric_river"]
        stack = np.stack(storm)
        for k, class_id in enumerate((1, 2)):
            np.testing.assert_allclose(clim["frequency"][k], (stack == class_id).mean(0))
            np.testing.assert_array_equal(clim["track_count"][k], (stack == class_id).any(0))
            assert int(clim["genesis_count"][k].sum()) == 1
        row, col = np.unravel_index(int(clim["genesis_count"][0].argmax()), stack.shape[1:])
        # The cell nearest the first centroid (grid spacing 2 degrees).
        assert abs(LAT[row] - path[0][0]) <= 1 and abs(LON[col] - path[0][1]) <= 1
        assert clim["frequency"].attrs["units"] == "1"
    capsys.readouterr()
    clim = str(tmp_path / "out" / "climatology.nc")
    assert main(["--compare", clim, clim]) == 0
    out = capsys.readouterr().out
    assert "tropical_cyclone: area-mean frequency" in out and "(+0.0%); tracks 1 -> 1 (+0)" in out


def test_command_names_a_file_without_a_mask(tmp_path, capsys):
    path = tmp_path / "x.nc"
    xr.Dataset({"TMQ": (("time", "lat", "lon"), np.zeros((1, 3, 4)))}).to_netcdf(path)
    with pytest.raises(SystemExit) as err:
        main(["--input", str(path)])
    assert str(err.value) == (f"climseg-events: error: --input: {path}: has no mask or "
                              "PREDICTED_LABELS or LABELS; found TMQ; name the mask variable "
                              "with --variable")
