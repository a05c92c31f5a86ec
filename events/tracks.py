"""Tracks: the objects of consecutive time steps linked by overlap.

The rule (as ClimateNet and TECA link masks, made deterministic): between
two consecutive time steps, every pair of objects of the same class that
share pixels is a candidate link, weighted by the pixels they share. Links
are taken greedily, largest overlap first (ties: the earlier object at t,
then the earlier object at t+1, "earlier" in the order `find_objects`
numbers them), each object of either step in at most one link:

- an object at t+1 linked to one at t continues its track;
- a split (one object at t overlapping several at t+1): the child with the
  largest overlap continues the track, the others start new tracks;
- a merge (several at t overlapping one at t+1): the child continues the
  track of the parent it overlaps most; the other parents' tracks end;
- an object overlapping nothing starts a track (genesis); a track whose
  object has no link at t+1 ends (termination).

A link depends on the two steps alone (`link`), never on the tracks'
history, so time chunks linked separately and stitched at their borders
give the tracks of one pass. `Tracker` streams: it holds only the previous
step's labels.
"""

import collections
import math

import numpy as np

from events.objects import EARTH_RADIUS_KM


def link(previous, current):
    """The links between the objects of two consecutive time steps.

    Args:
        previous, current: `(labels, kept)` of each step: `{class_id: labels}`
            as `find_objects` returns them, and the set of `(class_id, label)`
            of the objects kept (e.g. above a minimum area).

    Returns:
        `{(class_id, label at t+1): (class_id, label at t)}`.
    """
    (old_labels, old_kept), (new_labels, new_kept) = previous, current
    pairs = []
    for class_id, new in new_labels.items():
        old = old_labels.get(class_id)
        if old is None:
            continue
        both = (old > 0) & (new > 0)
        if not both.any():
            continue
        base = int(new.max()) + 1
        keys, counts = np.unique(old[both].astype(np.int64) * base + new[both],
                                 return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            a, b = divmod(key, base)
            if (class_id, a) in old_kept and (class_id, b) in new_kept:
                pairs.append((-count, class_id, a, b))
    links, used_old = {}, set()
    for _, class_id, a, b in sorted(pairs):
        if (class_id, a) in used_old or (class_id, b) in links:
            continue
        used_old.add((class_id, a))
        links[(class_id, b)] = (class_id, a)
    return links


class Tracker:
    """Links each time step's objects to the previous step's; streams over time."""

    def __init__(self):
        self._previous = None  # (labels by class, kept, {(class, label): track id})
        self._next_track = 1

    def add(self, objects, labels):
        """Gives track ids to one time step's `objects` (from `find_objects`), in their order."""
        kept = {(o.class_id, o.label) for o in objects}
        links = {}
        if self._previous is not None:
            old_labels, old_kept, old_tracks = self._previous
            links = {new: old_tracks[old]
                     for new, old in link((old_labels, old_kept), (labels, kept)).items()}
        ids = []
        for o in objects:
            key = (o.class_id, o.label)
            if key not in links:
                links[key] = self._next_track
                self._next_track += 1
            ids.append(links[key])
        self._previous = (labels, kept, links)
        return ids


def great_circle_km(lat1, lon1, lat2, lon2):
    """Distance on the sphere between two points, in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return EARTH_RADIUS_KM * math.acos(max(-1.0, min(1.0, c)))


def summarize_tracks(rows, first_time=None, last_time=None):
    """One summary per track from the per-object rows (dicts with track_id, class, time,
    hours, lat, lon, area_km2), in time order.

    Args:
        rows: the objects' rows.
        first_time, last_time: the series' first and last time (as the rows'
            `time`). A track present at the first step may have begun before
            it, one present at the last step may go on after it: their genesis
            or termination is not observed. Defaults to None (all observed).

    Returns:
        A list of dicts: track_id, class, start/end time, steps, lifetime_hours,
        genesis and termination lat/lon, distance_km, mean_speed_kmh, max_area_km2,
        genesis_observed and termination_observed (1 or 0);
        with the objects' intensities, the lifetime extremes: max_tmq,
        max_wind_speed (and lmi_time, its first time), min_psl, max_mean_prect.
    """
    by_track = collections.defaultdict(list)
    for row in rows:
        by_track[row["track_id"]].append(row)
    summaries = []
    for track_id in sorted(by_track):
        points = by_track[track_id]
        distance = sum(great_circle_km(a["lat"], a["lon"], b["lat"], b["lon"])
                       for a, b in zip(points[:-1], points[1:], strict=True))
        hours = points[-1]["hours"] - points[0]["hours"]
        summaries.append({
            "track_id": track_id, "class": points[0]["class"],
            "start_time": points[0]["time"], "end_time": points[-1]["time"],
            "steps": len(points), "lifetime_hours": hours,
            "genesis_lat": points[0]["lat"], "genesis_lon": points[0]["lon"],
            "termination_lat": points[-1]["lat"], "termination_lon": points[-1]["lon"],
            "distance_km": distance,
            "mean_speed_kmh": distance / hours if hours > 0 else math.nan,
            "max_area_km2": max(p["area_km2"] for p in points),
            "genesis_observed": int(points[0]["time"] != first_time),
            "termination_observed": int(points[-1]["time"] != last_time),
            **_lifetime_extremes(points)})
    return summaries


def _lifetime_extremes(points):
    """The track's intensity extremes, from the objects' intensity columns where present."""
    out = {}
    for column, pick in (("max_tmq", max), ("max_wind_speed", max), ("min_psl", min)):
        values = [p[column] for p in points if column in p]
        if values:
            out[column] = pick(values)
    if "max_wind_speed" in out:  # the lifetime maximum intensity: when the wind peaked
        out["lmi_time"] = next(p["time"] for p in points
                               if p.get("max_wind_speed") == out["max_wind_speed"])
    values = [p["mean_prect"] for p in points if "mean_prect" in p]
    if values:
        out["max_mean_prect"] = max(values)
    return out
