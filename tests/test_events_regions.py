"""events.regions: objects and tracks in IPCC AR6 reference regions, counted per year."""

import collections
import csv
import hashlib
import os
import re
import socket

import numpy as np
import pytest
import xarray as xr

from events.cli import main
from events.regions import SHAPEFILE, AR6Regions, ar6_regions

LAT = np.arange(-89.0, 90.0, 2.0)  # 90 rows
LON = np.arange(0.0, 360.0, 2.0)  # 180 columns, 0..358
LON180 = np.arange(-180.0, 180.0, 2.0)  # the same cells, -180..178


def test_the_shipped_outlines_are_the_ar6_reference_regions():
    folder = os.path.dirname(SHAPEFILE)
    with open(os.path.join(folder, "README.md")) as f:
        pinned = dict((name, digest) for digest, name in
                      re.findall(r"^ +([0-9a-f]{64})  (\S+)$", f.read(), re.MULTILINE))
    assert set(pinned) == {"ar6.shp", "ar6.shx", "ar6.dbf", "ar6.prj", "LICENSE"}
    for name, digest in pinned.items():
        with open(os.path.join(folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    regions = ar6_regions()
    assert list(regions.numbers) == list(range(58))
    assert regions.abbrevs[:6] == ["GIC", "NWN", "NEN", "WNA", "CNA", "ENA"]
    assert regions.abbrevs[46:] == ["ARO", "NPO", "EPO", "SPO", "NAO", "EAO", "SAO", "ARS",
                                    "BOB", "EIO", "SIO", "SOO"]
    assert regions.names[5] == "E.North-America"


@pytest.mark.parametrize("lon", [LON, LON180], ids=["0..360", "-180..180"])
def test_points_land_in_their_regions(lon):
    regions = AR6Regions(LAT, lon)
    points = {"NPO": (21, 140), "ENA": (39, 280), "SPO": (-31, 190), "EAU": (-25, 150),
              "WCE": (49, 8), "RFE": (65, 178), "SOO": (-61, -60), "EAN": (-89, 0)}
    lat, lon_ = zip(*points.values(), strict=True)
    found = [regions.abbrevs[n] for n in regions.of(lat, lon_)]
    assert found == list(points)
    # Longitudes of points in either convention: 65N 182E is 65N 178W, across the
    # dateline from the Russian Far East, in the North Pacific.
    assert [regions.abbrevs[n] for n in regions.of([65, 65, 39], [182, -178, -80])] == \
        ["NPO", "NPO", "ENA"]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine 3, in regionmask
def test_both_longitude_conventions_give_the_same_mask_and_every_cell_a_region():
    east = AR6Regions(LAT, LON).mask
    west = AR6Regions(LAT, LON180).mask
    np.testing.assert_array_equal(np.roll(west, -90, axis=1), east)  # -180 is column 90 of 0..358
    # A 1-degree grid has one cell centre on a shared border (82.5N 96.5W), which
    # regionmask leaves out: it takes the nearest region, one of its neighbours'.
    lat, lon = np.arange(-89.5, 90.0, 1.0), np.arange(0.5, 360.0, 1.0)
    raw = ar6_regions().mask(lon, lat, wrap_lon=180).values
    gaps = np.argwhere(np.isnan(raw))
    assert [(lat[r], lon[c]) for r, c in gaps] == [(82.5, 263.5)]
    mask = AR6Regions(lat, lon).mask
    assert mask.min() >= 0 and mask.max() == 57
    (r, c), = gaps
    neighbours = raw[r - 1:r + 2, c - 1:c + 2]
    assert mask[r, c] in set(neighbours[~np.isnan(neighbours)].astype(int).tolist())


def _cells(lat, lon):
    """Row and columns of a 3 x 3 storm centred on the cell nearest (lat, lon) of LAT, LON."""
    row = int(np.argmin(np.abs(LAT - lat)))
    col = int(np.argmin(np.abs((LON - lon + 180) % 360 - 180)))
    return slice(row - 1, row + 2), np.arange(col - 1, col + 2) % len(LON)


# Five steps, 12-hourly from 2106-12-31 00:00 (noleap): the first two in 2106.
# (class, first step, last step, centroid): cyclones in the western North Pacific
# and on either side of the dateline in the Russian Far East and the North
# Pacific (the storms at 65N span 176E..180 and 178W..174W), a river over
# eastern North America and one across 0E in western Europe.
STORMS = [(1, 0, 4, (21, 140)), (1, 1, 2, (65, 178)), (1, 3, 4, (65, 184)),
          (2, 2, 4, (39, 280)), (2, 0, 0, (47, 0))]
HOURS = [0, 12, 24, 36, 48]


def _write(path, lon):
    masks = np.zeros((len(HOURS), len(LAT), len(LON)), np.int8)
    for class_id, first, last, (lat, lon_) in STORMS:
        rows, cols = _cells(lat, lon_)
        masks[first:last + 1, rows, cols] = class_id
    if lon[0] < 0:  # the same cells on a -180..180 grid
        masks = np.roll(masks, 90, axis=2)
    xr.Dataset({"mask": (("time", "lat", "lon"), masks)},
               coords={"time": ("time", np.asarray(HOURS, float),
                                {"units": "hours since 2106-12-31", "calendar": "noleap"}),
                       "lat": ("lat", LAT, {"units": "degrees_north"}),
                       "lon": ("lon", lon, {"units": "degrees_east"})}).to_netcdf(path)
    return path


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No socket can connect, and regionmask's download cache is an empty folder."""
    def refuse(*args, **kwargs):
        raise OSError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ar6_regions.cache_clear()  # read the shapefile in the test
    yield tmp_path / "cache"
    ar6_regions.cache_clear()


@pytest.mark.parametrize("lon", [LON, LON180], ids=["0..360", "-180..180"])
def test_command_counts_objects_and_tracks_per_region_and_year(lon, tmp_path, offline, capsys):
    out = tmp_path / "out"
    assert main(["--input", str(_write(tmp_path / "m.nc", lon)), "--output-dir", str(out)]) == 0
    assert "regions.csv" in capsys.readouterr().out
    events, tracks = _read(out / "events.csv"), _read(out / "tracks.csv")
    assert [(t["class"], t["genesis_region"], t["start_time"][:4]) for t in tracks] == [
        ("tropical_cyclone", "NPO", "2106"), ("atmospheric_river", "WCE", "2106"),
        ("tropical_cyclone", "RFE", "2106"), ("atmospheric_river", "ENA", "2107"),
        ("tropical_cyclone", "NPO", "2107")]
    assert collections.Counter(e["region"] for e in events) == {"NPO": 7, "RFE": 2, "ENA": 3,
                                                                "WCE": 1}
    # regions.csv: every year, class and region, equal to counting the rows directly.
    rows = _read(out / "regions.csv")
    assert len(rows) == 2 * 2 * 58
    objects = collections.Counter((e["time"][:4], e["class"], e["region"]) for e in events)
    geneses = collections.Counter((t["start_time"][:4], t["class"], t["genesis_region"])
                                  for t in tracks)
    assert {(r["year"], r["class"], r["region"]): (int(r["object_steps"]), int(r["tracks"]))
            for r in rows if r["object_steps"] != "0" or r["tracks"] != "0"} == {
        key: (objects[key], geneses[key]) for key in set(objects) | set(geneses)}
    assert objects[("2107", "tropical_cyclone", "NPO")] == 5  # one storm 3 steps, one 2
    assert geneses[("2107", "tropical_cyclone", "NPO")] == 1
    with xr.open_dataset(out / "climatology.nc") as climatology:
        assert list(climatology["year"].values) == [2106, 2107]
        npo = climatology.sel(event="tropical_cyclone", region="NPO")
        assert npo["region_object_steps"].values.tolist() == [2, 5]
        assert npo["region_genesis_count"].values.tolist() == [1, 1]
        assert climatology["region_mask"].attrs["flag_meanings"].split()[47] == "NPO"
        assert climatology["frequency"].shape == (2, len(LAT), len(LON))  # merged, not joined
        assert int(climatology["frequency"].isnull().sum()) == 0
    assert not offline.exists()  # regionmask's download cache was never created


def test_no_regions_leaves_them_out(tmp_path):
    out = tmp_path / "out"
    assert main(["--input", str(_write(tmp_path / "m.nc", LON)), "--output-dir", str(out),
                 "--no-regions"]) == 0
    assert "region" not in _read(out / "events.csv")[0]
    assert "genesis_region" not in _read(out / "tracks.csv")[0]
    assert not (out / "regions.csv").exists()
    with xr.open_dataset(out / "climatology.nc") as climatology:
        assert "region_mask" not in climatology and "region" not in climatology.dims


def test_times_without_dates_are_one_period(tmp_path):
    path = tmp_path / "m.nc"
    masks = np.zeros((2, len(LAT), len(LON)), np.int8)
    rows, cols = _cells(39, 280)
    masks[:, rows, cols] = 2
    xr.Dataset({"mask": (("time", "lat", "lon"), masks)},
               coords={"lat": ("lat", LAT), "lon": ("lon", LON)}).to_netcdf(path)
    assert main(["--input", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    (row,) = [r for r in _read(tmp_path / "out" / "regions.csv") if r["tracks"] != "0"]
    assert (row["year"], row["class"], row["region"], row["object_steps"]) == (
        "", "atmospheric_river", "ENA", "2")
    with xr.open_dataset(tmp_path / "out" / "climatology.nc") as climatology:
        assert climatology["region_genesis_count"].dims == ("event", "region")


def test_missing_outlines_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import re

    import events.regions

    monkeypatch.setattr(events.regions, "SHAPEFILE", str(tmp_path / "ar6" / "ar6.shp"))
    ar6_regions.cache_clear()
    try:
        assert main(["--input", str(_write(tmp_path / "m.nc", LON)),
                     "--output-dir", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert re.match(r"climseg-events: error: .*ar6/ar6\.shp is missing.*--no-regions", err)
    finally:
        ar6_regions.cache_clear()
