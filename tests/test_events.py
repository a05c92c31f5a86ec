"""events: objects that wrap in longitude, their areas, tracks by overlap, climseg-events."""

import csv
import math
import os

import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import cf_problems

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
            # Both are there from the first step: begun before it, no genesis seen.
            assert int(clim["genesis_count"][k].sum()) == 0
        assert clim["track_total"].values.tolist() == [1, 1]
        assert clim["frequency"].attrs["units"] == "1"
    assert (cyclone["genesis_observed"], cyclone["termination_observed"]) == ("0", "0")
    capsys.readouterr()
    clim = str(tmp_path / "out" / "climatology.nc")
    assert main(["--compare", clim, clim]) == 0
    out = capsys.readouterr().out
    assert "tropical_cyclone: area-mean frequency" in out and "(+0.0%); tracks 1 -> 1 (+0)" in out


def test_command_names_a_file_without_a_mask(tmp_path, capsys):
    path = tmp_path / "x.nc"
    xr.Dataset({"TMQ": (("time", "lat", "lon"), np.zeros((1, 3, 4)))}).to_netcdf(path)
    assert main(["--input", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"climseg-events: error: --input: {path}: has no mask or "
                                       "PREDICTED_LABELS or LABELS; found TMQ; name the mask "
                                       "variable with --variable\n")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as err:  # argparse: status 2
        main(["--input", str(path), "--output-dir", str(tmp_path / "file")])
    assert err.value.code == 2
    assert f"--output-dir: {tmp_path / 'file'} is a file; expected a directory" in \
        capsys.readouterr().err


# --- The synthetic sequence: true tracks, intensities, chunks --------------------------------

@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    from data.sequence import generate_sequence

    return generate_sequence(tmp_path_factory.mktemp("sequence"), 40, 48, 96, seed=1)


def _stack(paths, name):
    out = []
    for path in paths:
        with netCDF4.Dataset(path) as ds:
            out.append(np.asarray(ds[name][:]))
    return np.concatenate(out)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_true_labels_give_the_true_tracks_exactly(sequence, tmp_path):
    out = tmp_path / "out"
    # Files given out of order: the series is ordered by time.
    assert main(["--input", *sequence[::-1], "--output-dir", str(out), "--track-ids"]) == 0
    for name in ("climatology.nc", "track_ids.nc"):  # CF, as the IOOS checker reads it
        assert cf_problems(out / name, tmp_path / f"{name}.json") == ([], True), name
    for name in ("events", "tracks"):  # the netCDF tables hold the CSV's rows
        rows = _csv(out / f"{name}.csv")
        with xr.open_dataset(out / f"{name}.nc") as table:
            assert list(table.data_vars) == list(rows[0])
            assert [str(v) for v in table["class"].values] == [r["class"] for r in rows]
            for column in ("track_id", "lat" if name == "events" else "genesis_lat"):
                # The CSV holds 10 significant digits.
                assert table[column].values.tolist() == pytest.approx(
                    [float(r[column]) for r in rows], rel=1e-9)
    with xr.open_dataset(out / "climatology.nc") as climatology:  # objects per step and class
        counts = climatology["object_count"].sel(event="tropical_cyclone").values
        times = [str(t) for t in climatology["time"].values]
    events_csv = _csv(out / "events.csv")
    assert counts.tolist() == [sum(r["time"] == t and r["class"] == "tropical_cyclone"
                                   for r in events_csv) for t in times]
    assert counts.sum() > 0 and len(times) == 40
    truth = _stack(sequence, "TRACK_ID")
    found = _stack([out / "track_ids.nc"], "TRACK_ID")
    labelled = truth > 0
    np.testing.assert_array_equal(found > 0, labelled)
    # One found track per true track and back, over every pixel of every step:
    # the same tracks, with the same members at each step.
    pairs = np.unique(np.stack([truth[labelled], found[labelled]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    true_of = dict(zip(pairs[1].tolist(), pairs[0].tolist(), strict=True))
    tracks, events = _csv(out / "tracks.csv"), _csv(out / "events.csv")
    assert len(tracks) == len(np.unique(truth[labelled])) >= 16
    for track in tracks:
        true = true_of[int(track["track_id"])]
        assert int(track["steps"]) == int((truth == true).any(axis=(1, 2)).sum())
    step_of = {os.path.basename(p): 8 * k for k, p in enumerate(sequence)}
    for row in events:
        t = step_of[row["file"]] + int(row["time_index"])
        assert int(row["pixels"]) == int((truth[t] == true_of[int(row["track_id"])]).sum())
    # Tracks that cross the seam (0E): each class has some, and they are found whole.
    seam = {c: set() for c in (1, 2)}
    labels = _stack(sequence, "LABELS")
    for t in range(len(truth)):
        for true in set(truth[t, :, 0].tolist()) & set(truth[t, :, -1].tolist()) - {0}:
            seam[int(labels[t][truth[t] == true][0])].add(true)
    assert seam[1] and seam[2], seam
    across = [r for r in events if true_of[int(r["track_id"])] in seam[1] | seam[2]
              and float(r["lon_min"]) > float(r["lon_max"])]
    assert across  # east from lon_min over 0E to lon_max


def test_intensities_from_the_fields(sequence, tmp_path):
    out = tmp_path / "out"
    assert main(["--input", *sequence, "--fields", os.path.dirname(sequence[0]),
                 "--output-dir", str(out), "--track-ids"]) == 0
    truth, found = _stack(sequence, "TRACK_ID"), _stack([out / "track_ids.nc"], "TRACK_ID")
    fields = {n: _stack(sequence, n).astype(np.float64)
              for n in ("TMQ", "U850", "V850", "PSL", "PRECT")}
    wind = np.hypot(fields["U850"], fields["V850"])
    # Cell areas from the sphere: R^2 dlon (sin north edge - sin south edge), 3.75-degree cells.
    south = np.radians(-90 + 3.75 * np.arange(48))
    area = (np.sin(south + np.radians(3.75)) - np.sin(south))[:, None] * np.ones(96)
    step_of = {os.path.basename(p): 8 * k for k, p in enumerate(sequence)}
    events = _csv(out / "events.csv")
    assert len(events) > 300
    by_track = {}
    for row in events:
        t = step_of[row["file"]] + int(row["time_index"])
        inside = found[t] == int(row["track_id"])
        assert inside.any() and len(np.unique(truth[t][inside])) == 1
        expected = {"max_tmq": fields["TMQ"][t][inside].max(), "max_wind_speed":
                    wind[t][inside].max(), "min_psl": fields["PSL"][t][inside].min(),
                    "mean_prect": (fields["PRECT"][t] * area)[inside].sum() / area[inside].sum()}
        for name, value in expected.items():
            assert float(row[name]) == pytest.approx(value, rel=1e-8), name
        by_track.setdefault(row["track_id"], []).append(expected)
    for track in _csv(out / "tracks.csv"):
        rows = by_track[track["track_id"]]
        assert float(track["max_wind_speed"]) == pytest.approx(
            max(r["max_wind_speed"] for r in rows), rel=1e-8)
        assert float(track["min_psl"]) == pytest.approx(min(r["min_psl"] for r in rows),
                                                        rel=1e-8)
    # Cyclones decay: one that lived two days and ended before the series did
    # ends shallower than its deepest.
    cyclones = [t for t in _csv(out / "tracks.csv") if t["class"] == "tropical_cyclone"
                and int(t["steps"]) >= 16 and t["end_time"] != events[-1]["time"]]
    assert len(cyclones) >= 3
    for track in cyclones:
        last = [r for r in events if r["track_id"] == track["track_id"]][-1]
        assert float(last["min_psl"]) > float(track["min_psl"]) + 500


def test_two_processes_give_the_same_results_as_one(sequence, tmp_path):
    outputs = {}
    for jobs in (1, 2, 3):
        out = tmp_path / f"jobs{jobs}"
        assert main(["--input", *sequence, "--output-dir", str(out), "--jobs", str(jobs),
                     "--track-ids"]) == 0
        outputs[jobs] = out
    for jobs in (2, 3):
        for name in ("events.csv", "tracks.csv"):
            assert (outputs[jobs] / name).read_text() == (outputs[1] / name).read_text()
        with xr.open_dataset(outputs[1] / "climatology.nc") as a, \
                xr.open_dataset(outputs[jobs] / "climatology.nc") as b:
            xr.testing.assert_identical(a, b)
        np.testing.assert_array_equal(_stack([outputs[jobs] / "track_ids.nc"], "TRACK_ID"),
                                      _stack([outputs[1] / "track_ids.nc"], "TRACK_ID"))
    # Tracks do cross the chunk borders (steps 20, and 13 and 27).
    truth = _stack(sequence, "TRACK_ID")
    assert set(truth[19].ravel()) & set(truth[20].ravel()) - {0}


def test_figures_and_frames_are_pngs(sequence, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", sequence[0], "--fields", sequence[0], "--output-dir", str(out),
                 "--figures", "--frames"]) == 0
    assert "8 frames in frames/" in capsys.readouterr().out
    frames = sorted((out / "frames").iterdir())
    assert [p.name for p in frames] == [f"frame-{k:05d}.png" for k in range(8)]
    from PIL import Image

    for path in [out / f"{n}.png" for n in ("frequency", "genesis", "lifetime", "speed")] \
            + frames[:2]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    with Image.open(frames[0]) as a, Image.open(frames[1]) as b:
        assert np.asarray(a).shape == np.asarray(b).shape and \
            not np.array_equal(np.asarray(a), np.asarray(b))  # a step of its own, dated


def test_coastlines_put_land_where_it_is():
    from events.figures import land_fraction

    lat, lon, fraction = land_fraction()
    at = lambda la, lo: fraction[np.abs(lat - la).argmin(), np.abs(lon - lo).argmin()]  # noqa: E731
    assert at(0.25, 20.25) == 1.0  # central Africa
    assert at(0.25, 180.25) == 0.0  # the Pacific
    assert at(-80.25, 100.25) == 1.0  # Antarctica
    assert 0.25 < fraction.mean() < 0.35  # land is about 29% of cells by number


def test_the_cached_coastlines_are_the_package_s(tmp_path, monkeypatch):
    from events import figures

    monkeypatch.setenv("CLIMSEG_CACHE", str(tmp_path))
    figures.land_fraction.cache_clear()
    first = figures.land_fraction(2.0)
    assert (tmp_path / "land-fraction-2.npz").is_file()
    figures.land_fraction.cache_clear()
    again = figures.land_fraction(2.0)  # from the file
    figures.land_fraction.cache_clear()
    for a, b, c in zip(first, again, figures._land_fraction(2.0), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_genesis_is_counted_after_the_first_step_only(tmp_path):
    # A cyclone from the first step on, and one born at step 1 that dies after step 2.
    steps = [_mask((1, 40, 44, 10 + 2 * t, 16 + 2 * t),
                   *([(1, 60, 64, 100, 106)] if t in (1, 2) else [])) for t in range(4)]
    masks = _write_masks(tmp_path / "m.nc", steps, [0, 3, 6, 9])
    assert main(["--input", str(masks), "--output-dir", str(tmp_path / "out"),
                 "--no-regions"]) == 0
    with open(tmp_path / "out" / "tracks.csv") as f:
        tracks = {t["start_time"]: t for t in csv.DictReader(f)}
    old, new = tracks["2106-01-01 00:00:00"], tracks["2106-01-01 03:00:00"]
    assert (old["genesis_observed"], old["termination_observed"]) == ("0", "0")
    assert (new["genesis_observed"], new["termination_observed"]) == ("1", "1")
    with xr.open_dataset(tmp_path / "out" / "climatology.nc") as clim:
        genesis = clim["genesis_count"].sel(event="tropical_cyclone").values
        assert int(genesis.sum()) == 1
        row, col = np.unravel_index(int(genesis.argmax()), genesis.shape)
        # The cell nearest the newborn's centroid (grid spacing 2 degrees).
        assert abs(LAT[row] - float(new["genesis_lat"])) <= 1
        assert abs(LON[col] - float(new["genesis_lon"])) <= 1
        assert clim["track_total"].sel(event="tropical_cyclone").item() == 2


def test_masks_are_read_by_dimension_name_in_any_order_and_orientation(tmp_path):
    """A mask stored (time, lon, lat), latitude north to south and longitude -180..180 gives
    the objects and tracks of the same mask stored (time, lat, lon) on 0..360."""
    steps = [_mask((1, 40, 44, 170 + 3 * t, 176 + 3 * t), (2, 60, 64, 85, 100)) for t in range(4)]
    for name in ("plain", "turned"):
        (tmp_path / name).mkdir()
    plain = _write_masks(tmp_path / "plain" / "m.nc", steps, [0, 3, 6, 9])
    with xr.open_dataset(plain, decode_times=False) as ds:
        turned = ds.assign_coords(lon=(ds.lon + 180) % 360 - 180).sortby("lon")
        turned.sortby("lat", ascending=False).transpose("time", "lon", "lat").to_netcdf(
            tmp_path / "turned" / "m.nc")
    for name in ("plain", "turned"):
        assert main(["--input", str(tmp_path / name / "m.nc"), "--output-dir",
                     str(tmp_path / name / "out"), "--no-regions"]) == 0
    for table in ("events.csv", "tracks.csv"):
        a, b = ((tmp_path / name / "out" / table).read_text() for name in ("plain", "turned"))
        assert a == b and len(a.splitlines()) > 2, table


@pytest.mark.parametrize("hours_b, message", [
    ([9, 12], "time 2106-01-01 09:00:00 (step 0) is also step 3 of "),
    ([3, 12], "time 2106-01-01 03:00:00 (step 0) is also step 1 of "),
])
def test_files_that_overlap_in_time_are_refused(tmp_path, capsys, hours_b, message):
    steps = [_mask((1, 40, 44, 10, 16)) for _ in range(4)]
    a = _write_masks(tmp_path / "a.nc", steps, [0, 3, 6, 9])
    b = _write_masks(tmp_path / "b.nc", steps[:2], hours_b)
    assert main(["--input", str(a), str(b), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"climseg-events: error: --input: {b}: {message}{a}")
    assert err.endswith("expected every time once (files that overlap in time?)")
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def _tracks_csv(out):
    with open(out / "tracks.csv") as f:
        return list(csv.DictReader(f))


def test_mask_values_are_classes_by_flag_meanings_or_classes(tmp_path, capsys):
    # A binary river mask (TECA/ARTMIP style): 1 is a river, not a cyclone.
    steps = [_mask((1, 60, 64, 85 + t, 100 + t)) for t in range(3)]
    plain = _write_masks(tmp_path / "plain.nc", steps, [0, 3, 6])
    assert main(["--input", str(plain), "--output-dir", str(tmp_path / "a"), "--no-regions",
                 "--classes", "1=ar"]) == 0
    assert [t["class"] for t in _tracks_csv(tmp_path / "a")] == ["atmospheric_river"]
    flagged = tmp_path / "flagged.nc"
    with xr.open_dataset(plain, decode_times=False) as ds:
        ds["mask"].attrs.update(flag_values=np.array([0, 1], np.int8),
                                flag_meanings="no_event atmospheric_river")
        ds.to_netcdf(flagged)
    assert main(["--input", str(flagged), "--output-dir", str(tmp_path / "b"),
                 "--no-regions"]) == 0
    assert [t["class"] for t in _tracks_csv(tmp_path / "b")] == ["atmospheric_river"]
    # Missing values (NaN in a float mask) are no event.
    floats = tmp_path / "floats.nc"
    with xr.open_dataset(plain, decode_times=False) as ds:
        values = ds["mask"].values.astype(np.float32)
        values[:, :10] = np.nan
        ds.assign(mask=(ds["mask"].dims, values)).to_netcdf(floats)
    assert main(["--input", str(floats), "--output-dir", str(tmp_path / "c"),
                 "--no-regions"]) == 0
    assert [t["class"] for t in _tracks_csv(tmp_path / "c")] == ["tropical_cyclone"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_mask_values_that_are_no_class_are_one_line(tmp_path, capsys, jobs):
    steps = [_mask((1, 40, 44, 10, 16)) for _ in range(4)]
    steps[2][0, :5] = 7  # e.g. a fill value
    path = _write_masks(tmp_path / "m.nc", steps, [0, 3, 6, 9])
    assert main(["--input", str(path), "--output-dir", str(tmp_path / "out"),
                 "--jobs", jobs]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"climseg-events: error: --input: {path}: step 2: mask values [7] are not "
                   "classes (0=background, 1=tropical_cyclone, 2=atmospheric_river, from the "
                   "default); give --classes VALUE=CLASS,... (e.g. 1=atmospheric_river for a "
                   "binary river mask, 3=background to ignore a value)")
    assert not (tmp_path / "out").exists()
    assert main(["--input", str(path), "--output-dir", str(tmp_path / "ok"),
                 "--classes", "1=tc,7=background"]) == 0
    with pytest.raises(SystemExit) as stop:
        main(["--input", str(path), "--classes", "1=storm"])
    assert stop.value.code == 2
    assert "--classes: '1=storm': expected VALUE=CLASS" in capsys.readouterr().err


def test_masks_without_coordinates_are_on_a_global_regular_grid(tmp_path, capsys):
    """Masks of HDF5 samples (index dimensions y, x, as climseg-predict writes them) are
    taken as a global regular grid, said in a note: here LAT and LON exactly."""
    steps = [_mask((1, 40, 44, 170 + 3 * t, 176 + 3 * t), (2, 60, 64, 85, 100)) for t in range(3)]
    plain = _write_masks(tmp_path / "plain.nc", steps, [0, 3, 6])
    bare = tmp_path / "bare.nc"
    with xr.open_dataset(plain, decode_times=False) as ds:
        ds["mask"].rename(lat="y", lon="x").drop_vars(["y", "x"]).to_dataset().to_netcdf(bare)
    for path in (plain, bare):
        assert main(["--input", str(path), "--output-dir", str(tmp_path / path.stem),
                     "--no-regions"]) == 0
    out = capsys.readouterr().out
    assert (f"climseg-events: note: {bare} has no latitudes and longitudes (y, x are indices): "
            "taken as a global regular grid") in out and str(plain) not in out
    a, b = ((tmp_path / name / "events.csv").read_text().replace(name, "F")
            for name in ("plain", "bare"))
    assert a == b and len(a.splitlines()) == 7


def test_flag_values_as_text_and_far_off_values(tmp_path, capsys):
    steps = [_mask((1, 60, 64, 85 + t, 100 + t)) for t in range(2)]
    plain = _write_masks(tmp_path / "plain.nc", steps, [0, 3])
    with xr.open_dataset(plain, decode_times=False) as ds:
        text = ds.copy()
        text["mask"].attrs.update(flag_values="0 1", flag_meanings="none AR")  # as a string
        text.to_netcdf(tmp_path / "text.nc")
        far = ds.assign(mask=ds["mask"].astype(np.int32))
        far["mask"][1, 0, :3] = -(2 ** 30)  # a fill value the file does not declare
        far.to_netcdf(tmp_path / "far.nc")
    assert main(["--input", str(tmp_path / "text.nc"), "--output-dir", str(tmp_path / "a"),
                 "--no-regions"]) == 0
    assert [t["class"] for t in _tracks_csv(tmp_path / "a")] == ["atmospheric_river"]
    assert main(["--input", str(tmp_path / "far.nc"), "--output-dir", str(tmp_path / "b")]) == 2
    assert f"{tmp_path / 'far.nc'}: step 1: mask values [-1073741824] are not classes" in \
        capsys.readouterr().err
