"""Tracks scored against the truth: matched tracks, false alarms and misses per class.

The truth is a time series whose every labelled pixel carries the id of
its true track (`TRACK_ID`, with the class in `LABELS`), as `climseg-synth
--sequence` writes it. The found tracks are those of `climseg-events`
(`events.tracks`), on masks of the same grid and times.

The rule: a found track and a true track overlap by the pixels where both
are present and of the same class, summed over the time steps they share.
Pairs are matched one-to-one, greedily, largest overlap first (ties: the
smaller found track id, then the smaller true id); a pair needs at least
`min_overlap` pixels. Then, per class:

- matched: true tracks given a found track;
- misses: true tracks left without one;
- false alarms: found tracks left without a true one;
- POD (probability of detection) = matched / true tracks;
- FAR (false alarm ratio) = false alarms / found tracks.

Only the masks' time steps are scored, so the truth may cover a longer
period; a true track that lives only outside it is not counted.

    score = TrackScore.from_series(series, ids_of, truth_files)
    for row in score.summary():
        print(row["class"], row["matched"], row["misses"], row["false_alarms"])
"""

import collections

import numpy as np

from data.errors import DataFileError
from data.layouts import CLASSES

TRACK_VARIABLE = "TRACK_ID"
CLASS_VARIABLE = "LABELS"
SUMMARY_COLUMNS = ("class", "true_tracks", "found_tracks", "matched", "misses",
                   "false_alarms", "pod", "far")
MATCH_COLUMNS = ("class", "true_track", "found_track", "overlap_pixels", "true_pixels",
                 "found_pixels")


class TruthSource:
    """True track ids and classes of each time step, from sequence files, found by time.

    Args:
        paths: netCDF files holding `TRACK_ID` and `LABELS` on (time, lat, lon).
        lat, lon: the masks' grid; the files must be on it.

    Raises:
        DataFileError: a file without the variables, or on another grid.
    """

    def __init__(self, paths, lat, lon):
        from events.series import _open

        self.paths = [str(p) for p in paths]
        self._where = {}  # time -> (file index, time index)
        for n, path in enumerate(self.paths):
            with _open(path) as ds:
                missing = [v for v in (TRACK_VARIABLE, CLASS_VARIABLE) if v not in ds.variables]
                if missing:
                    found = ", ".join(sorted(ds.data_vars)) or "no variables"
                    raise DataFileError(path, f"has no {' or '.join(missing)}; found {found}; "
                                              "expected a synthetic sequence (climseg-synth "
                                              "--sequence) with the true track of every pixel")
                dims = ds[TRACK_VARIABLE].dims
                grid_lat = np.asarray(ds[dims[1]].values, float)
                grid_lon = np.asarray(ds[dims[2]].values, float)
                if grid_lat.shape != np.shape(lat) or grid_lon.shape != np.shape(lon) or not (
                        np.allclose(grid_lat, lat) and np.allclose(grid_lon, lon)):
                    raise DataFileError(path, f"grid is {len(grid_lat)}x{len(grid_lon)}; the "
                                              f"masks' is {len(lat)}x{len(lon)} (the same "
                                              "latitudes and longitudes are expected)")
                times = ds[dims[0]].values if dims[0] in ds.variables else []
                for t, when in enumerate(times):
                    self._where[when] = (n, t)
        self._path, self._dataset = None, None

    def __contains__(self, when):
        return when in self._where

    def planes(self, when):
        """`(class ids, true track ids)` (H, W) at time `when`."""
        n, t = self._where[when]
        if self._path != self.paths[n]:
            from events.series import _open

            self.close()
            self._path, self._dataset = self.paths[n], _open(self.paths[n])
        ds = self._dataset
        return (np.asarray(ds[CLASS_VARIABLE][t].values),
                np.asarray(ds[TRACK_VARIABLE][t].values))

    def close(self):
        if self._dataset is not None:
            self._dataset.close()
        self._path, self._dataset = None, None


class TrackScore:
    """Overlaps of found and true tracks, accumulated step by step, and their matching.

    Args:
        min_overlap: the fewest shared pixels (over all common steps) for a
            pair to be matched. Defaults to `1`.

    Example:

    >>> score = TrackScore()
    >>> score.add(found_classes, found_ids, true_classes, true_ids)   # per time step
    >>> score.summary()[0]["matched"]
    """

    def __init__(self, min_overlap=1):
        if not (isinstance(min_overlap, (int, np.integer)) and min_overlap >= 1):
            raise ValueError(f"min_overlap={min_overlap!r}; expected an integer >= 1")
        self.min_overlap = int(min_overlap)
        self.overlap = collections.Counter()  # (found, true) -> shared pixels
        self.found = {}  # found track -> class id
        self.true = {}  # true track -> class id
        self.found_pixels = collections.Counter()
        self.true_pixels = collections.Counter()
        self.steps = 0

    def add(self, found_classes, found_ids, true_classes, true_ids):
        """One time step: class ids and track ids (0: none) of the masks and of the truth."""
        self.steps += 1
        for classes, ids, tracks, pixels in ((found_classes, found_ids, self.found,
                                              self.found_pixels),
                                             (true_classes, true_ids, self.true,
                                              self.true_pixels)):
            inside = ids > 0
            keys, first, counts = np.unique(ids[inside], return_index=True, return_counts=True)
            for key, cls, count in zip(keys.tolist(), classes[inside][first].tolist(),
                                       counts.tolist(), strict=True):
                tracks.setdefault(key, int(cls))
                pixels[key] += count
        both = (found_ids > 0) & (true_ids > 0) & (found_classes == true_classes)
        if both.any():
            base = int(true_ids.max()) + 1
            keys, counts = np.unique(found_ids[both].astype(np.int64) * base + true_ids[both],
                                     return_counts=True)
            for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                self.overlap[divmod(key, base)] += count

    def matches(self):
        """`{found track: true track}`: one-to-one, greedy by overlap (see the module)."""
        pairs = sorted((-count, found, true) for (found, true), count in self.overlap.items()
                       if count >= self.min_overlap)
        matched, used = {}, set()
        for _, found, true in pairs:
            if found in matched or true in used:
                continue
            matched[found] = true
            used.add(true)
        return matched

    def summary(self, class_ids=(1, 2)):
        """One dict per class with `SUMMARY_COLUMNS` (POD, FAR: NaN when undefined)."""
        matched = self.matches()
        rows = []
        for class_id in class_ids:
            true = [t for t, c in self.true.items() if c == class_id]
            found = [f for f, c in self.found.items() if c == class_id]
            hits = sum(f in matched for f in found)
            rows.append({"class": CLASSES[class_id], "true_tracks": len(true),
                         "found_tracks": len(found), "matched": hits,
                         "misses": len(true) - hits, "false_alarms": len(found) - hits,
                         "pod": hits / len(true) if true else float("nan"),
                         "far": (len(found) - hits) / len(found) if found else float("nan")})
        return rows

    def match_rows(self):
        """One dict per matched pair with `MATCH_COLUMNS`, by class and true track."""
        rows = [{"class": CLASSES[self.true[true]], "true_track": true, "found_track": found,
                 "overlap_pixels": self.overlap[(found, true)],
                 "true_pixels": self.true_pixels[true], "found_pixels": self.found_pixels[found]}
                for found, true in self.matches().items()]
        return sorted(rows, key=lambda r: (CLASSES.index(r["class"]), r["true_track"]))

    @classmethod
    def from_series(cls, series, ids_of, truth_files, min_area_km2=0.0, min_overlap=1):
        """Scores the tracks `climseg-events` found in `series` against `truth_files`.

        Args:
            series: the masks' `events.series.Series`.
            ids_of: `{(step, class, label): track id}`, as `events.cli.analyse` returns it.
            truth_files: sequence files with `TRACK_ID` and `LABELS` for every
                time step of the series (more steps are allowed).
            min_area_km2: the minimum area the tracks were found with. Defaults to 0.
            min_overlap: see `TrackScore`. Defaults to `1`.

        Raises:
            DataFileError: a truth file that cannot be used, or a time step of
                the masks that no truth file holds.
        """
        from events.series import track_id_planes

        truth = TruthSource(truth_files, series.grid.lat, series.grid.lon)
        missing = [when for _, _, _, when in series.steps if when not in truth]
        if missing:
            raise DataFileError(truth_files[0] if truth_files else "--truth",
                                f"the truth files hold no step at {missing[0]} ({len(missing)} "
                                f"of the masks' {len(series)} steps missing); expected every "
                                "time of the masks")
        score = cls(min_overlap)
        try:
            for index, mask, found_ids in track_id_planes(series, range(len(series)), ids_of,
                                                          min_area_km2):
                true_classes, true_ids = truth.planes(series.steps[index][3])
                score.add(mask, found_ids, true_classes, true_ids)
        finally:
            truth.close()
        return score
