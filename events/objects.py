"""Objects in a mask: connected regions of one class per time step, wrapping in longitude.

A storm that crosses the dateline is one object: components that touch
across the grid's first and last longitude column are merged. Each object
gets its area in km^2 from the grid's cell areas on a sphere, its
area-weighted centroid (longitude as a circular mean, so an object around
the dateline is centred near 180, not 0) and its bounding box.

    grid = Grid(lat, lon)
    for obj in find_objects(mask, grid, min_area_km2=1e4):
        print(obj.class_id, obj.lat, obj.lon, obj.area_km2)
"""

import collections

import numpy as np
import scipy.ndimage

EARTH_RADIUS_KM = 6371.0

Object = collections.namedtuple(
    "Object", ["label", "class_id", "pixels", "area_km2", "lat", "lon", "lat_min", "lat_max",
               "lon_min", "lon_max"])
Object.__doc__ = """One connected region of one class at one time step.

`label` is its number in the labelled array `find_objects` returns (1, 2,
...); `lon_min`/`lon_max` bound it going east from `lon_min`, so an object
across the dateline has `lon_min > lon_max`."""


class Grid:
    """A regular latitude-longitude grid: cell areas and whether it wraps in longitude.

    Args:
        lat: cell-centre latitudes in degrees (any order).
        lon: cell-centre longitudes in degrees, evenly spaced.
        periodic: whether the longitudes go all the way round. Defaults to
            whether their spacing times their number is 360 degrees.
    """

    def __init__(self, lat, lon, periodic=None):
        self.lat = np.asarray(lat, np.float64)
        self.lon = np.asarray(lon, np.float64)
        dlon = np.abs(np.diff(self.lon)).mean() if len(self.lon) > 1 else 360.0
        self.periodic = bool(np.isclose(dlon * len(self.lon), 360.0, rtol=1e-3)) \
            if periodic is None else periodic
        # Cell edges half-way between centres, the outermost capped at the poles.
        order = np.argsort(self.lat)
        centres = self.lat[order]
        edges = np.concatenate([[centres[0] - (centres[1] - centres[0]) / 2],
                                (centres[1:] + centres[:-1]) / 2,
                                [centres[-1] + (centres[-1] - centres[-2]) / 2]])
        edges = np.clip(edges, -90.0, 90.0)
        band = EARTH_RADIUS_KM ** 2 * np.radians(dlon) * np.diff(np.sin(np.radians(edges)))
        self.row_area_km2 = np.empty_like(band)
        self.row_area_km2[order] = band  # the area of one cell in each row

    @property
    def shape(self):
        return len(self.lat), len(self.lon)


def label_classes(mask, class_id, periodic=True, connectivity=2):
    """Connected components of `mask == class_id`, merged across the longitude seam.

    Args:
        mask: (lat, lon) class ids.
        class_id: the class to label.
        periodic: merge components that touch across the first and last
            column. Defaults to True.
        connectivity: 1 (edges) or 2 (edges and corners). Defaults to `2`.

    Returns:
        `(labels, count)`: int32 (lat, lon), 0 outside, 1..count numbered in
        the order their first pixel appears (row by row).
    """
    inside = np.asarray(mask) == class_id
    structure = scipy.ndimage.generate_binary_structure(2, connectivity)
    labels, count = scipy.ndimage.label(inside, structure=structure)
    if periodic and count > 1:
        parent = np.arange(count + 1)

        def root(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        west, east = labels[:, 0], labels[:, -1]
        shifts = (-1, 0, 1) if connectivity == 2 else (0,)
        rows = labels.shape[0]
        for shift in shifts:
            for r in range(rows):
                r2 = r + shift
                if 0 <= r2 < rows and west[r] and east[r2]:
                    a, b = root(west[r]), root(east[r2])
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        roots = np.array([root(a) for a in range(count + 1)])
        if (roots != np.arange(count + 1)).any():
            # Renumber 1..n in order of first appearance.
            merged = roots[labels]
            _, first = np.unique(merged.ravel(), return_index=True)
            order = np.unique(merged.ravel())[np.argsort(first)]
            order = order[order != 0]
            renumber = np.zeros(count + 1, np.int32)
            renumber[order] = np.arange(1, len(order) + 1)
            labels, count = renumber[merged], len(order)
    return labels.astype(np.int32), int(count)


def find_objects(mask, grid, class_ids=(1, 2), min_area_km2=0.0, connectivity=2):
    """The objects of every class in one mask, with their sizes and positions.

    Args:
        mask: (lat, lon) class ids, on `grid`.
        grid: the mask's `Grid`.
        class_ids: the classes to find objects of. Defaults to cyclones and rivers.
        min_area_km2: smaller objects are dropped. Defaults to 0.
        connectivity: 1 or 2, as for `label_classes`.

    Returns:
        `(objects, labels)`: a list of `Object`, and `{class_id: labels}` arrays.
    """
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise ValueError(f"mask has shape {mask.shape}; the grid is {grid.shape}")
    lon_rad = np.radians(grid.lon)
    cos_lon, sin_lon = np.cos(lon_rad), np.sin(lon_rad)
    objects, all_labels = [], {}
    for class_id in class_ids:
        labels, count = label_classes(mask, class_id, grid.periodic, connectivity)
        all_labels[class_id] = labels
        if not count:
            continue
        # Sums over the labelled pixels only (objects cover a few per cent of
        # the grid), in the grid's row-major order.
        where = np.flatnonzero(labels)
        label = labels.ravel()[where]
        rows, cols = np.divmod(where, mask.shape[1])
        area_of = grid.row_area_km2[rows]

        area, pixels, lat_w, cos_w, sin_w = (
            np.bincount(label, weights, count + 1)[1:]
            for weights in (area_of, None, area_of * grid.lat[rows], area_of * cos_lon[cols],
                            area_of * sin_lon[cols]))
        # Each object's pixels, contiguous: label order, row-major within.
        members = np.argsort(label, kind="stable")
        starts = np.concatenate([[0], np.cumsum(pixels.astype(np.int64))])
        for k in range(count):
            if area[k] < min_area_km2:
                continue
            mine = members[starts[k]:starts[k + 1]]
            lats = grid.lat[rows[mine]]
            lon_min, lon_max = _lon_extent(grid.lon[np.unique(cols[mine])])
            objects.append(Object(
                label=k + 1, class_id=int(class_id), pixels=int(pixels[k]),
                area_km2=float(area[k]), lat=float(lat_w[k] / area[k]),
                lon=float(np.degrees(np.arctan2(sin_w[k], cos_w[k])) % 360.0),
                lat_min=float(lats.min()), lat_max=float(lats.max()),
                lon_min=lon_min, lon_max=lon_max))
    return objects, all_labels


def _lon_extent(lons):
    """(west, east) of a set of longitudes: the complement of their largest gap."""
    lons = np.sort(np.mod(lons, 360.0))
    if len(lons) == 1:
        return float(lons[0]), float(lons[0])
    gaps = np.diff(np.concatenate([lons, [lons[0] + 360.0]]))
    widest = int(np.argmax(gaps))
    return float(lons[(widest + 1) % len(lons)]), float(lons[widest])
