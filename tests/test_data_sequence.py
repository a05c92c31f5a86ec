"""data.sequence: a synthetic time series whose events travel and decay, with true track ids."""

import math

import cftime
import netCDF4
import numpy as np
import pytest

from data.layouts import CHANNELS
from data.model_output import ModelOutput
from data.sequence import SequenceGenerator, generate_sequence
from data.synthetic import _RULES, label_fields, main

H, W = 48, 96


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return generate_sequence(tmp_path_factory.mktemp("seq"), 40, H, W, seed=1)


def _read(paths, name):
    out = []
    for path in paths:
        with netCDF4.Dataset(path) as ds:
            out.append(ds[name][:].filled() if np.ma.isMaskedArray(ds[name][:])
                       else ds[name][:])
    return np.concatenate(out)


def test_cf_time_files_and_variables(files):
    assert [p.split("/")[-1] for p in files] == [
        f"sequence-2106-01-0{d}-00.nc" for d in range(1, 6)]
    with netCDF4.Dataset(files[1]) as ds:
        time = ds["time"]
        assert time.calendar == "noleap"
        when = cftime.num2date(time[:], time.units, time.calendar)
        assert [str(w) for w in when[[0, 1, 7]]] == [
            "2106-01-02 00:00:00", "2106-01-02 03:00:00", "2106-01-02 21:00:00"]
        assert set(CHANNELS) | {"LABELS", "TRACK_ID"} <= set(ds.variables)
        assert ds["TMQ"].units == "kg m-2" and ds["LABELS"].flag_meanings.split()[1] == \
            "tropical_cyclone"
    # climseg-predict's reader takes the files as model output, labels included.
    with ModelOutput(files[0]) as out:
        fields, labels = out.read(3)
    assert fields.shape == (H, W, 16) and labels.shape == (H, W)
    np.testing.assert_array_equal(labels, _read(files[:1], "LABELS")[3])


def test_labels_follow_the_rules_and_every_labelled_pixel_has_a_track(files):
    labels, tracks = _read(files, "LABELS"), _read(files, "TRACK_ID")
    np.testing.assert_array_equal(labels > 0, tracks > 0)
    fields = {name: _read(files, name) for name in ("TMQ", "U850", "V850", "PSL")}
    rule = label_fields(fields, **_RULES["labels_0"])
    inside = labels > 0
    np.testing.assert_array_equal(rule[inside], labels[inside])  # a subset of the rules
    # A track is one class, always; every class has several tracks.
    for track in np.unique(tracks[inside]):
        assert len(np.unique(labels[tracks == track])) == 1
    per_class = {c: len(np.unique(tracks[labels == c])) for c in (1, 2)}
    assert per_class[1] >= 8 and per_class[2] >= 8, per_class


def test_deterministic_by_seed_whatever_the_files(tmp_path):
    a = generate_sequence(tmp_path / "a", 12, H, W, seed=3, steps_per_file=8)
    b = generate_sequence(tmp_path / "b", 12, H, W, seed=3, steps_per_file=5)
    c = generate_sequence(tmp_path / "c", 12, H, W, seed=4)
    assert len(a) == 2 and len(b) == 3
    for name in ("TMQ", "TRACK_ID"):
        np.testing.assert_array_equal(_read(a, name), _read(b, name))
    assert not np.array_equal(_read(a, "TMQ"), _read(c, "TMQ"))


def test_cyclones_travel_west_and_poleward_at_plausible_speeds():
    gen = SequenceGenerator(H, W, seed=1)
    paths = {}
    for _ in range(40):
        gen.step()
        for e in gen._events:
            if e.kind == 1:
                paths.setdefault(e.serial, []).append((e.params["lat0"], e.params["lon0"]))
    speeds, checked = [], 0
    for path in paths.values():
        for (lat0, lon0), (lat1, lon1) in zip(path[:-1], path[1:], strict=False):
            dlon = (lon1 - lon0 + 180.0) % 360.0 - 180.0
            km = 111.195 * math.hypot(lat1 - lat0, dlon * math.cos(math.radians(lat0)))
            speeds.append(km / 3.0)
            assert abs(lat1) > abs(lat0)  # poleward
            if abs(lat0) < 18:
                assert dlon < 0  # westward in the tropics
                checked += 1
    assert checked > 20 and 10 < min(speeds) and max(speeds) < 45  # km/h


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path), "-n", "3", "--height", "32", "--width", "64", "--sequence",
                 "--steps-per-file", "2", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sequence-2106-01-01-00.nc", "sequence-2106-01-01-06.nc"]
    with pytest.raises(SystemExit):
        main([str(tmp_path), "-n", "3", "--sequence", "--validation", "2"])
    assert "--validation is for samples" in capsys.readouterr().err
