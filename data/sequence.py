"""Synthetic sequences: cyclones and rivers that travel, grow and decay, with their true tracks.

`climseg-synth OUT_DIR -n STEPS --sequence` writes time-ordered, 3-hourly
steps on a `noleap` calendar from 2106-01-01 as CF netCDF files (one file
per `--steps-per-file` steps, as CAM writes its history files): the 16
CAM5 channels by name, `LABELS` (class ids) and `TRACK_ID`, the true track
of every labelled pixel (0 elsewhere). `climseg-predict` reads the fields,
`climseg-events` the labels.

The fields are the single-sample generator's (`data.synthetic`): a
zonal-mean background whose smooth noise evolves in time (an AR(1)
process with a two-day memory), with events added:

- Tropical cyclones form between 8 and 20 degrees latitude and travel
  westward at 4 to 7 m/s with a poleward drift of 1 to 2.5 m/s, turning
  eastward past about 26 degrees (recurvature); they deepen for a day,
  then decay, faster poleward of 30 degrees.
- Atmospheric rivers drift eastward at 6 to 12 m/s and stretch poleward
  and eastward, then fade.

Labels are the single-sample generator's threshold rules (`labels_0`)
applied to the fields, kept only inside each event's own neighbourhood
(two radii of a cyclone, two widths of a river) and, there, only the
connected region that is largest. So every labelled pixel belongs to one
event, and the truth is what a tracker linking masks by overlap can
recover exactly: each event is one connected object at every step of its
life, it overlaps its own previous object and no other event's of its
class, and objects of one class never touch. Where an event would break
one of these (two rivers running into each other, a cyclone that moved off
its last footprint) the younger event ends instead; an event ends too when
its label vanishes as it decays. The first cyclone and the first river
start on the grid's seam at 0 degrees east, so that tracks cross it.

Everything is a function of the seed.
"""

import datetime
import math
import os

import numpy as np
import scipy.ndimage

from data.files import written_atomically
from data.layouts import CHANNELS, CLASSES, regular_grid
from data.progress import Progress
from data.synthetic import (
    _CYCLONE_EXTRAS,
    _RULES,
    NOISE_CELLS,
    _background,
    _derive,
    cyclone,
    label_fields,
    river,
)

STEP_HOURS = 3
START = (2106, 1, 1)
TIME_UNITS = "hours since 2106-01-01 00:00:00"
CALENDAR = "noleap"
UNITS = {"TMQ": "kg m-2", "U850": "m s-1", "V850": "m s-1", "UBOT": "m s-1", "VBOT": "m s-1",
         "QREFHT": "kg kg-1", "PS": "Pa", "PSL": "Pa", "T200": "K", "T500": "K",
         "PRECT": "m s-1", "TS": "K", "TREFHT": "K", "Z1000": "m", "Z200": "m", "ZBOT": "m"}
_M_PER_DEGREE = math.pi * 6371e3 / 180.0
_STEP_S = STEP_HOURS * 3600.0
_NOISE_MEMORY = math.exp(-STEP_HOURS / 48.0)  # the background's correlation from step to step
_RULE = _RULES["labels_0"]
_TC, _AR = 1, 2


class _Event:
    """One cyclone or river: its fixed parameters and its state as it evolves."""

    def __init__(self, kind, serial, born, max_age, params, motion):
        self.kind, self.serial, self.born, self.max_age = kind, serial, born, max_age
        self.params, self.motion = params, motion
        self.track = None  # given when the event first has a label
        self.label = None  # its pixels at the last step it lived

    def age(self, t):
        return t - self.born

    def move(self):
        """One step of travel."""
        m, p = self.motion, self.params
        if self.kind == _TC:
            lat = abs(p["lat0"])
            turned = 1.0 / (1.0 + math.exp(-(lat - 26.0) / 3.0))  # recurvature
            u = m["u"] * (1.0 - turned) + 8.0 * turned
            v = p["hemisphere"] * (m["v"] + 2.0 * turned)
            p["lat0"] += v * _STEP_S / _M_PER_DEGREE
            p["lon0"] = (p["lon0"] + u * _STEP_S / (
                _M_PER_DEGREE * math.cos(math.radians(p["lat0"])))) % 360.0
        else:
            shift = m["u"] * _STEP_S / (_M_PER_DEGREE * math.cos(math.radians(35.0)))
            p["lon0"] += shift
            p["lon1"] += shift + m["stretch_lon"]
            p["lat1"] = min(p["lat1"] + m["stretch_lat"], 68.0)

    def add_to(self, f, lat, lon, t):
        """Adds the event at step `t` to the fields; returns its neighbourhood (bool (H, W))."""
        p, age = self.params, self.age(t)
        zone = np.zeros((len(lat), len(lon)), bool)
        if self.kind == _TC:
            strength = min(1.0, 0.8 + 0.2 * age / 8.0) * math.exp(
                -max(0.0, age - self.motion["mature"]) / self.motion["decay"]
                - max(0.0, abs(p["lat0"]) - 30.0) / 8.0)
            box, r = cyclone(f, lat, lon, p["hemisphere"], p["lat0"], p["lon0"],
                             p["depth"] * strength, p["radius"], p["wind_radius"],
                             *(x * strength for x in p["extras"]))
            zone[box] = r < 2.0 * p["radius"]
        else:
            fade_out = np.clip((self.max_age - age) / 6.0, 0.3, 1.0)
            strength = min(1.0, 0.85 + 0.15 * age / 4.0) * fade_out
            box, d, fade = river(f, lat, lon, p["hemisphere"], p["lat0"], p["lat1"], p["lon0"],
                                 p["lon1"], p["bend"], p["width"], p["speed"] * strength,
                                 p["tmq"] * strength, p["prect"] * strength)
            zone[box] = (d < 2.0 * p["width"]) & (fade > 0)
        return zone


def _new_cyclone(rng, serial, t, lon=None, hemisphere=None):
    hemisphere = rng.choice([-1.0, 1.0]) if hemisphere is None else hemisphere
    params = {"hemisphere": hemisphere, "lat0": hemisphere * rng.uniform(8.0, 20.0),
              "lon0": rng.uniform(0.0, 360.0) if lon is None else lon,
              "depth": rng.uniform(4000.0, 9000.0), "radius": rng.uniform(3.5, 4.5),
              "wind_radius": rng.uniform(1.2, 2.0),
              "extras": [rng.uniform(*bounds) for bounds in _CYCLONE_EXTRAS]}
    motion = {"u": -rng.uniform(4.0, 7.0), "v": rng.uniform(1.0, 2.5),
              "mature": rng.uniform(8.0, 24.0), "decay": rng.uniform(6.0, 12.0)}
    return _Event(_TC, serial, t, int(rng.integers(48, 97)), params, motion)


def _new_river(rng, serial, t, lon=None):
    lat0 = rng.uniform(12.0, 22.0)
    lon0 = rng.uniform(0.0, 360.0) if lon is None else lon
    params = {"hemisphere": rng.choice([-1.0, 1.0]), "lat0": lat0,
              "lat1": lat0 + rng.uniform(22.0, 32.0), "lon0": lon0,
              "lon1": lon0 + rng.uniform(20.0, 40.0), "bend": rng.uniform(-0.3, 0.3),
              "width": rng.uniform(3.0, 4.5), "speed": rng.uniform(20.0, 28.0),
              "tmq": rng.uniform(20.0, 28.0), "prect": rng.uniform(5e-7, 2e-6)}
    motion = {"u": rng.uniform(6.0, 12.0), "stretch_lat": rng.uniform(0.1, 0.4),
              "stretch_lon": rng.uniform(0.1, 0.5)}
    return _Event(_AR, serial, t, int(rng.integers(12, 41)), params, motion)


def _touches(a, b):
    """Whether masks a and b share or border a pixel (corners too; longitude wraps)."""
    grown = scipy.ndimage.maximum_filter(a, size=3, mode=("constant", "wrap"))
    return bool((grown & b).any())


def _largest_region(inside):
    """The largest connected region of `inside` (corners connect; longitude wraps)."""
    from events.objects import label_classes

    labels, count = label_classes(inside.astype(np.uint8), 1)
    if not count:
        return inside
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels == int(np.argmax(sizes)) + 1


class SequenceGenerator:
    """Steps of a synthetic sequence, one at a time; a function of the seed.

    Args:
        height: latitudes, south to north. Defaults to `768`.
        width: longitudes, from 0 eastward. Defaults to `1152`.
        seed: random seed. Defaults to `0`.
        cyclone_rate: new cyclones tried per step (Poisson mean). Defaults to `0.15`.
        river_rate: new rivers tried per step. Defaults to `0.2`.

    Example:

    >>> gen = SequenceGenerator(48, 96, seed=1)
    >>> fields, labels, track_ids = gen.step()
    """

    def __init__(self, height=768, width=1152, seed=0, cyclone_rate=0.15, river_rate=0.2):
        if height < 16 or width < 16:
            raise ValueError(f"height={height}, width={width}; expected at least 16 each")
        self.lat, self.lon = regular_grid(height, width)
        self.rates = {_TC: cyclone_rate, _AR: river_rate}
        self._rng = np.random.default_rng([seed, 2106])
        self._coarse = self._rng.standard_normal(NOISE_CELLS)
        self._events = []
        self._serial = 0
        self._next_track = 1
        self.t = 0

    def _spawn(self):
        rng, t, new = self._rng, self.t, []
        if t == 0:  # a cyclone and a river on the seam, then a few of each
            new.append(_new_cyclone(rng, self._serial, t, lon=rng.uniform(2.0, 6.0),
                                    hemisphere=1.0))
            new.append(_new_river(rng, self._serial + 1, t, lon=rng.uniform(335.0, 345.0)))
            self._serial += 2
            counts = {_TC: 3, _AR: 4}
        else:
            counts = {kind: int(rng.poisson(rate)) for kind, rate in self.rates.items()}
        for kind, count in counts.items():
            for _ in range(count):
                make = _new_cyclone if kind == _TC else _new_river
                new.append(make(rng, self._serial, t))
                self._serial += 1
        return new

    def step(self):
        """The next time step.

        Returns:
            `(fields, labels, track_ids)`: a dict of (H, W) float32 fields by
            channel name, int8 (H, W) class ids and int32 (H, W) true track ids.
        """
        rng, t = self._rng, self.t
        self._coarse = (_NOISE_MEMORY * self._coarse
                        + math.sqrt(1.0 - _NOISE_MEMORY ** 2) * rng.standard_normal(NOISE_CELLS))
        background = _background(rng, self.lat, self.lon, self._coarse)
        previous = [e for e in self._events if e.label is not None]
        for e in self._events:
            if t > e.born:
                e.move()
        events = [e for e in self._events if e.age(t) <= e.max_age] + self._spawn()
        while True:  # drop events that would break the truth's rules, until none does
            f = {k: v.copy() for k, v in background.items()}
            zones = [e.add_to(f, self.lat, self.lon, t) for e in events]
            _derive(f)
            f = {name: f[name].astype(np.float32) for name in CHANNELS}  # as written
            rule = label_fields(f, **_RULE)
            labels = [_largest_region((rule == e.kind) & zone)
                      for e, zone in zip(events, zones, strict=True)]
            drop = self._violations(events, labels, previous)
            if not drop:
                break
            events = [e for k, e in enumerate(events) if k not in drop]
        class_ids = np.zeros(rule.shape, np.int8)
        track_ids = np.zeros(rule.shape, np.int32)
        for e, label in zip(events, labels, strict=True):
            if e.track is None:
                e.track = self._next_track
                self._next_track += 1
            e.label = label
            class_ids[label] = e.kind
            track_ids[label] = e.track
        self._events = events
        self.t += 1
        return f, class_ids, track_ids

    @staticmethod
    def _violations(events, labels, previous):
        """Indices of the events to drop: empty, off their own track, or on another's."""
        drop = set()
        for k, (e, label) in enumerate(zip(events, labels, strict=True)):
            if not label.any() or (e.label is not None and not (label & e.label).any()):
                drop.add(k)
            elif any(p is not e and p.kind == e.kind and (label & p.label).any()
                     for p in previous):
                drop.add(k)
        for k, (e, label) in enumerate(zip(events, labels, strict=True)):
            for j in range(k):
                if j in drop or k in drop or events[j].kind != e.kind:
                    continue
                if _touches(labels[j], label):  # the younger (later) one ends
                    drop.add(k)
        return drop


def step_times(first, count):
    """`count` cftime noleap times, 3-hourly, from step `first` on."""
    import cftime

    return [cftime.DatetimeNoLeap(*START) + datetime.timedelta(hours=STEP_HOURS * (first + k))
            for k in range(count)]


def write_steps(path, lat, lon, first, steps):
    """Writes `steps` [(fields, labels, track_ids), ...] from step `first` as one CF netCDF."""
    import xarray as xr

    dims = ("time", "lat", "lon")
    chunk = {"zlib": True, "complevel": 1, "chunksizes": (1, len(lat), len(lon))}
    variables, encoding = {}, {}
    for name in CHANNELS:
        variables[name] = (dims, np.stack([s[0][name] for s in steps]),
                           {"units": UNITS[name], "long_name": name})
        encoding[name] = dict(chunk, _FillValue=None)
    variables["LABELS"] = (dims, np.stack([s[1] for s in steps]), {
        "long_name": "event class", "flag_values": np.arange(len(CLASSES), dtype=np.int8),
        "flag_meanings": " ".join(CLASSES)})
    variables["TRACK_ID"] = (dims, np.stack([s[2] for s in steps]), {
        "long_name": "true track of the labelled pixel (0: none)", "units": "1"})
    encoding.update({name: dict(chunk, _FillValue=None) for name in ("LABELS", "TRACK_ID")})
    encoding["time"] = {"units": TIME_UNITS, "calendar": CALENDAR, "dtype": "float64"}
    dataset = xr.Dataset(variables, coords={
        "time": ("time", step_times(first, len(steps)), {"standard_name": "time",
                                                         "axis": "T"}),
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude",
                             "axis": "Y"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude",
                             "axis": "X"})},
        attrs={"Conventions": "CF-1.8", "title": "climseg synthetic sequence",
               "source": "data.sequence (climseg-synth --sequence)"})
    with written_atomically(path) as tmp:
        dataset.to_netcdf(tmp, encoding=encoding)
    return path


def generate_sequence(out_dir, num_steps, height=768, width=1152, seed=0, steps_per_file=8,
                      progress=False):
    """Writes `num_steps` time steps of a synthetic sequence to `out_dir`.

    Args:
        out_dir: directory to write to (created if needed).
        num_steps: time steps, 3-hourly from 2106-01-01 00:00 (noleap).
        height, width: the grid. Default to the CAM5 0.25-degree grid (768, 1152).
        seed: random seed. Defaults to `0`.
        steps_per_file: time steps in each file. Defaults to `8` (one day).
        progress: print progress to stderr. Defaults to False.

    Returns:
        The paths written, in time order: `sequence-YYYY-MM-DD-HH.nc`, named
        by their first step.
    """
    for name, value in (("num_steps", num_steps), ("steps_per_file", steps_per_file)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name}={value!r}; expected an integer >= 1")
    os.makedirs(out_dir, exist_ok=True)
    gen = SequenceGenerator(height, width, seed)
    meter = Progress(num_steps, "climseg-synth", enabled=progress)
    paths = []
    for first in range(0, num_steps, steps_per_file):
        steps = []
        for _ in range(min(steps_per_file, num_steps - first)):
            steps.append(gen.step())
            meter.update(1)
        when = step_times(first, 1)[0]
        path = os.path.join(out_dir, f"sequence-{when.strftime('%Y-%m-%d-%H')}.nc")
        paths.append(write_steps(path, gen.lat, gen.lon, first, steps))
    meter.close()
    return paths
