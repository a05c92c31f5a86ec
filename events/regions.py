"""Events by IPCC AR6 reference region: the region of each object, counts per region and year.

The 58 AR6 WGI reference regions (46 land, 3 of them land and sea, and 12
ocean; Iturbide et al., 2020, ESSD, https://doi.org/10.5194/essd-12-2959-2020)
are read from the shapefile shipped in `events/ar6` (CC BY 4.0; see its
README), as `regionmask.defined_regions.ar6.all` builds them, but without
regionmask's download of the outlines on first use: nothing is fetched.
regionmask rasterizes them onto the masks' grid (cell centres; longitudes
0..360 or -180..180), and an object belongs to the region of the grid cell
nearest its centroid, a track to the region of its genesis (its first
centroid).

    regions = AR6Regions(series.grid.lat, series.grid.lon)
    regions.assign(events, tracks)           # events' "region", tracks' "genesis_region"
    rows = regions.count(events, tracks, [when for *_, when in series.steps])
    dataset = climatology.to_dataset().merge(regions.to_dataset(rows), join="exact")
"""

import collections
import functools
import os
import warnings

import numpy as np

from data.layouts import CLASSES

SHAPEFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ar6", "ar6.shp")
"""The AR6 reference regions' outlines (with .shx, .dbf, .prj beside it)."""

COLUMNS = ("year", "class", "region", "region_name", "object_steps", "tracks")
"""regions.csv: per year, class and region, the objects whose centroid is in the region
(one per object and time step, as rows of events.csv) and the tracks born in it."""

CITATION = ("Iturbide et al. (2020): An update of IPCC climate reference regions for "
            "subcontinental analysis of climate model data, ESSD 12, 2959-2988, "
            "https://doi.org/10.5194/essd-12-2959-2020 (CC BY 4.0)")


@functools.lru_cache(maxsize=1)
def ar6_regions():
    """The AR6 reference regions (land and ocean) as `regionmask.Regions`, numbered 0..57.

    Raises:
        FileNotFoundError: the shapefile is not installed beside this module.
    """
    for suffix in (".shp", ".shx", ".dbf"):
        path = SHAPEFILE[:-4] + suffix
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the AR6 regions' outlines are installed "
                                    f"with climseg (package data of events); reinstall, or run "
                                    f"climseg-events with --no-regions")
    import geopandas
    import regionmask

    return regionmask.from_geopandas(
        geopandas.read_file(SHAPEFILE), names="Name", abbrevs="Acronym",
        name="AR6 reference regions", source="Iturbide et al., 2020 (ESSD)", overlap=False)


class AR6Regions:
    """The AR6 reference regions on a latitude-longitude grid.

    Args:
        lat: cell-centre latitudes in degrees (any order).
        lon: cell-centre longitudes in degrees, 0..360 or -180..180.

    Attributes:
        mask: (lat, lon) int16, the region number (0..57) of each cell centre.
        abbrevs, names: of the regions, by number ("NPO", "N.Pacific-Ocean").
    """

    def __init__(self, lat, lon):
        self.lat = np.asarray(lat, np.float64)
        self.lon = np.asarray(lon, np.float64)
        regions = ar6_regions()
        self.abbrevs = list(regions.abbrevs)
        self.names = list(regions.names)
        if list(regions.numbers) != list(range(len(self.abbrevs))):
            raise ValueError(f"the AR6 regions are numbered {regions.numbers}; expected 0.."
                             f"{len(self.abbrevs) - 1}")
        # The outlines are in -180..180: wrap_lon=180 maps a 0..360 grid onto them.
        with warnings.catch_warnings():  # affine 3 on regionmask's `transform * scale`
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            mask = np.array(regions.mask(self.lon, self.lat, wrap_lon=180).values)
        gaps = np.isnan(mask)
        if gaps.any():
            mask[gaps] = _nearest_region(regions.polygons, self.lat, self.lon, gaps)
        self.mask = mask.astype(np.int16)

    def of(self, lat, lon):
        """The region numbers of points: those of the grid cells nearest them."""
        lat = np.atleast_1d(np.asarray(lat, np.float64))
        lon = np.atleast_1d(np.asarray(lon, np.float64))
        rows, cols = np.empty(len(lat), np.int64), np.empty(len(lat), np.int64)
        for start in range(0, len(lat), 4096):  # bounded memory for a year of objects
            part = slice(start, start + 4096)
            rows[part] = np.argmin(np.abs(self.lat[None, :] - lat[part, None]), axis=1)
            dlon = (self.lon[None, :] - lon[part, None] + 180.0) % 360.0 - 180.0
            cols[part] = np.argmin(np.abs(dlon), axis=1)
        return self.mask[rows, cols]

    def assign(self, events, tracks):
        """Sets each event row's `region` (of its centroid) and each track's `genesis_region`."""
        for rows, lat, lon, column in ((events, "lat", "lon", "region"),
                                       (tracks, "genesis_lat", "genesis_lon", "genesis_region")):
            if rows:
                numbers = self.of([r[lat] for r in rows], [r[lon] for r in rows])
                for row, number in zip(rows, numbers.tolist(), strict=True):
                    row[column] = self.abbrevs[number]

    def count(self, events, tracks, times, classes=CLASSES[1:]):
        """Objects and track geneses per year, class and region (after `assign`).

        Args:
            events, tracks: the rows of events.csv and tracks.csv, with regions.
            times: the time of every step of the series (its years all get rows,
                zeros included); times without a date (plain numbers) make one
                period with year None.
            classes: the event class names. Defaults to cyclones and rivers.

        Returns:
            A list of dicts with `COLUMNS`, by year, class and region number.
        """
        year_of = {str(t): _year(t) for t in times}
        objects = collections.Counter((year_of[e["time"]], e["class"], e["region"])
                                      for e in events)
        geneses = collections.Counter((year_of[t["start_time"]], t["class"], t["genesis_region"])
                                      for t in tracks)
        years = sorted(set(year_of.values()), key=lambda y: (y is not None, y))
        return [{"year": year, "class": name, "region": abbrev, "region_name": region_name,
                 "object_steps": objects[(year, name, abbrev)],
                 "tracks": geneses[(year, name, abbrev)]}
                for year in years for name in classes
                for abbrev, region_name in zip(self.abbrevs, self.names, strict=True)]

    def to_dataset(self, rows):
        """The region mask and the counts of `count` as CF variables to merge into climatology.nc.

        `region_mask` (lat, lon) holds region numbers with CF flag attributes;
        `region_object_steps` and `region_genesis_count` are on (event, year,
        region), without year when the times carry no dates.
        """
        import xarray as xr

        classes = list(dict.fromkeys(r["class"] for r in rows))
        years = list(dict.fromkeys(r["year"] for r in rows))
        dated = None not in years
        shape = (len(classes), len(years), len(self.abbrevs))
        objects, geneses = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        number = {a: i for i, a in enumerate(self.abbrevs)}
        for r in rows:
            at = (classes.index(r["class"]), years.index(r["year"]), number[r["region"]])
            objects[at], geneses[at] = r["object_steps"], r["tracks"]
        dims = ("event", "year", "region") if dated else ("event", "region")
        if not dated:
            objects, geneses = objects[:, 0], geneses[:, 0]
        coords = {"event": ("event", np.array(classes, dtype=object)),
                  "region": ("region", np.array(self.abbrevs, dtype=object),
                             {"long_name": "IPCC AR6 reference region (abbreviation)"}),
                  "region_name": ("region", np.array(self.names, dtype=object),
                                  {"long_name": "IPCC AR6 reference region"}),
                  "lat": ("lat", self.lat, {"units": "degrees_north", "standard_name": "latitude",
                                            "axis": "Y"}),
                  "lon": ("lon", self.lon, {"units": "degrees_east", "standard_name": "longitude",
                                            "axis": "X"})}
        if dated:
            coords["year"] = ("year", np.array(years, np.int32), {"long_name": "calendar year"})
        return xr.Dataset(
            {"region_mask": (("lat", "lon"), self.mask, {
                "long_name": "IPCC AR6 reference region of the cell centre",
                "flag_values": np.arange(len(self.abbrevs), dtype=np.int16),
                "flag_meanings": " ".join(self.abbrevs), "references": CITATION}),
             "region_object_steps": (dims, objects, {
                 "long_name": "objects (per time step) whose centroid is in the region",
                 "units": "1"}),
             "region_genesis_count": (dims, geneses, {
                 "long_name": "tracks first seen (first centroid) in the region",
                 "units": "1"})},
            coords=coords)


def _year(when):
    """The calendar year of a time (cftime, datetime or numpy datetime64), or None for numbers."""
    if isinstance(when, np.datetime64):
        return int(when.astype("datetime64[Y]").astype(np.int64)) + 1970
    return getattr(when, "year", None)


def _nearest_region(polygons, lat, lon, cells):
    """Region numbers for the `cells` (a (lat, lon) boolean array) regionmask left out.

    A cell centre exactly on a border two outlines share belongs to neither when
    rasterized; it takes the region nearest it (the lower number on a tie).
    """
    import shapely

    rows, cols = np.nonzero(cells)
    points = shapely.points((lon[cols] + 180.0) % 360.0 - 180.0, lat[rows])
    distance = shapely.distance(np.asarray(polygons, dtype=object)[:, None], points[None, :])
    return np.argmin(distance, axis=0)
