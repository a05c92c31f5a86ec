"""Events speed: `climseg-events` over a year of full-size masks against ClimateNet's tracking.

The masks are the true labels of a synthetic sequence (`data.sequence`, the
generator of `climseg-synth --sequence`) at 768x1152, written as
`climseg-predict` writes masks (`mask` on (time, lat, lon), one file a day
of 8 steps), generated once into the cache (`CLIMSEG_CACHE` or
~/.cache/climseg; 1 to 2 s a step at full size on 2 cores) and reused. The year
of issue 19 is 2,920 steps (`--steps 2920`, the default).

1. `climseg-events --input MASKS` (objects, tracks and the climatology, as
   the command writes them: events.csv, tracks.csv, climatology.nc) with
   `--jobs 1` and `--jobs 2`, each a child process timed end to end
   (start-up included), in turns, `--repeats` times; peak RSS is the sum
   over the process and its workers, sampled every 50 ms.
2. ClimateNet's `track_events` (`climatenet/track_events.py` of
   github.com/andregraubner/ClimateNet, outside this repository, with the
   one change numpy 2 needs: `astype(np.int)` -> `astype(int)`), on the
   first `--climatenet-steps` steps of the same masks, loaded into one
   xarray DataArray as ClimateNet's `predict` returns them (loading not
   timed). It runs twice: with its defaults (objects under 250 pixels
   dropped, tracks shorter than 5 steps dropped), and with the thresholds
   at which its rule and climseg's agree on these masks (objects of 2
   pixels and more, tracks of any length; its drop threshold cannot keep
   1-pixel objects), where the track counts are compared with climseg's
   on the same steps and with the truth.

    .venv/bin/python bench/events.py --climatenet /tmp/ClimateNet              # a year
    .venv/bin/python bench/events.py --steps 240 --climatenet-steps 24 --climatenet /tmp/ClimateNet
    .venv/bin/python bench/events.py --quick                                  # 192x288

Prints one line `EVENTS_RESULT {json}`. Not a test: ClimateNet's
pure-Python loops take seconds a step at full size.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT_TAG = "EVENTS_RESULT "
WORKER_TAG = "CLIMATENET_RESULT "
STEPS_PER_FILE = 8
FULL, QUICK = (768, 1152), (192, 288)
# ClimateNet's thresholds at which its tracks and climseg's agree on masks whose
# objects never split or merge: keep every object of 2 pixels or more (its size
# check drops 1-pixel ones whatever the threshold), every track of any length.
AGREE = {"tc_drop_threshold": 2, "ar_drop_threshold": 2, "minimum_time_length": 1}


def cache_dir(height, width, seed):
    root = os.environ.get("CLIMSEG_CACHE") or os.path.expanduser("~/.cache/climseg")
    return Path(root) / f"bench-events-{height}x{width}-seed{seed}"


def make_masks(directory, steps, height, width, seed=0):
    """The mask files of the first `steps` steps (whole days), generated where missing.

    Returns:
        `(paths, truth)`: the files in time order, and per file the number of
        true tracks of each class it holds ({class: [track ids]}), from `TRACK_ID`.
    """
    import numpy as np

    from data.sequence import SequenceGenerator, step_times

    directory.mkdir(parents=True, exist_ok=True)
    files = -(-steps // STEPS_PER_FILE)
    paths = [directory / f"masks-{d:04d}.mask.nc" for d in range(files)]
    truth_path = directory / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    missing = [p for p in paths if not p.exists() or p.name not in truth]
    if missing:
        print(f"generating {len(paths)} days of {height}x{width} masks into {directory} "
              f"({len(missing)} missing)", flush=True)
        gen = SequenceGenerator(height, width, seed)
        start = time.perf_counter()
        for d, path in enumerate(paths):
            labels, ids = [], []
            for _ in range(STEPS_PER_FILE):
                _, class_ids, track_ids = gen.step()
                labels.append(class_ids)
                ids.append(track_ids)
            if path in missing:
                labels, ids = np.stack(labels), np.stack(ids)
                _write_masks(path, gen.lat, gen.lon, step_times(d * STEPS_PER_FILE,
                                                                STEPS_PER_FILE), labels)
                truth[path.name] = {str(c): sorted(set(np.unique(ids[labels == c]).tolist()))
                                    for c in (1, 2)}
                truth_path.write_text(json.dumps(truth))
            if (d + 1) % 10 == 0:
                print(f"  {d + 1}/{len(paths)} days, {time.perf_counter() - start:.0f} s",
                      flush=True)
    return [str(p) for p in paths], [truth[p.name] for p in paths]


def _write_masks(path, lat, lon, times, labels):
    """One file as `climseg-predict` writes masks: `mask` bytes with flag values, CF time."""
    import numpy as np
    import xarray as xr

    from data.layouts import CLASSES
    from data.sequence import CALENDAR, TIME_UNITS

    ds = xr.Dataset(
        {"mask": (("time", "lat", "lon"), labels.astype(np.uint8), {
            "long_name": "event class", "flag_values": np.arange(len(CLASSES), dtype=np.uint8),
            "flag_meanings": " ".join(CLASSES)})},
        coords={"time": ("time", times, {"standard_name": "time"}),
                "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})})
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp, encoding={
        "mask": {"zlib": True, "complevel": 1, "chunksizes": (1, len(lat), len(lon))},
        "time": {"units": TIME_UNITS, "calendar": CALENDAR, "dtype": "float64"}})
    os.replace(tmp, path)


def true_counts(truth, files):
    """Distinct true tracks of each class in the first `files` files."""
    out = {}
    for c, name in (("1", "tropical_cyclone"), ("2", "atmospheric_river")):
        out[name] = len(set().union(*(set(t[c]) for t in truth[:files])))
    return out


def timed(cmd, env=None):
    """Runs `cmd`; returns (seconds, peak RSS in bytes summed over its process tree, stdout)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak, done = [0], threading.Event()

    def sample():
        try:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                done.wait(0.05)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                           f"{stderr[-3000:]}")
    return seconds, peak[0], stdout


def run_climseg(paths, jobs, work):
    out = Path(work) / f"events-jobs{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "events.cli", "--input", *paths, "--output-dir", str(out),
           "--jobs", str(jobs)]
    seconds, rss, stdout = timed(cmd, dict(os.environ, PYTHONPATH=str(ROOT)))
    counts = {}
    for name in ("tropical cyclone", "atmospheric river"):
        line = next(x for x in stdout.splitlines() if f" {name} tracks" in x)
        counts[name.replace(" ", "_")] = int(line.split()[1])
    return {"seconds": seconds, "peak_rss_bytes": rss, "tracks": counts}


def climatenet_worker(args):
    """In a child: ClimateNet's track_events on the masks; prints one JSON line."""
    import numpy as np
    import xarray as xr

    source = Path(args.climatenet) / "climatenet" / "track_events.py"
    spec = importlib.util.spec_from_file_location("climatenet_track_events", source)
    module = importlib.util.module_from_spec(spec)
    # The file alone (climatenet/__init__ imports torch), importable by name: its pool
    # pickles the function it makes global there.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    start = time.perf_counter()
    masks = xr.concat([xr.open_dataset(p)["mask"].load() for p in args.masks], "time")
    masks = masks.isel(time=slice(0, args.steps))
    load = time.perf_counter() - start
    kwargs = json.loads(args.kwargs)
    start = time.perf_counter()
    events = module.track_events(masks, **kwargs)
    seconds = time.perf_counter() - start
    values, classes, tracks = events.values, masks.values, {}
    for c, name in ((1, "tropical_cyclone"), (2, "atmospheric_river")):
        tracks[name] = len(np.unique(values[(classes == c) & (values > 0)]))
    print(WORKER_TAG + json.dumps({"seconds": seconds, "load_seconds": load,
                                   "steps": int(masks.sizes["time"]), "tracks": tracks}),
          flush=True)


def run_climatenet(directory, paths, steps, kwargs):
    cmd = [sys.executable, __file__, "--climatenet-worker", "--climatenet", str(directory),
           "--steps", str(steps), "--kwargs", json.dumps(kwargs), "--masks", *paths]
    wall, rss, stdout = timed(cmd, dict(os.environ, PYTHONPATH=str(ROOT)))
    line = next(x for x in stdout.splitlines() if x.startswith(WORKER_TAG))
    return dict(json.loads(line[len(WORKER_TAG):]), wall_seconds=wall, peak_rss_bytes=rss,
                settings=kwargs)


def speedups(result):
    """ClimateNet's time over climseg-events', per --jobs and ClimateNet setting, two ways.

    `same_steps`: on the same (first) steps, climseg-events timed end to end
    (start-up included) against `track_events` alone. `per_step`: seconds per
    step of climseg-events over all the steps against `track_events`' (both
    stream step by step, so their time grows with the steps; start-up is
    spread over the steps).
    """
    out = {}
    ours, few = result["climseg"]["all"], result["climseg"]["climatenet_steps"]
    for label, theirs in result["climatenet"].items():
        per_step = theirs["seconds"] / theirs["steps"]
        for j in (1, 2):
            out[f"{label}_jobs{j}"] = {
                "same_steps": theirs["seconds"] / few[f"jobs{j}"]["median_seconds"],
                "per_step": per_step / (ours[f"jobs{j}"]["median_seconds"] / ours["steps"])}
    return out


def check_climatenet(directory):
    source = Path(directory) / "climatenet" / "track_events.py"
    if not source.exists():
        raise SystemExit(f"--climatenet: {source} does not exist; expected a copy of "
                         "github.com/andregraubner/ClimateNet")
    if "astype(np.int)" in source.read_text():
        raise SystemExit(f"--climatenet: {source} uses np.int, which numpy 2 removed; apply "
                         "the one fix: sed -i 's/astype(np\\.int)/astype(int)/' " + str(source))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="time steps of masks for climseg-events "
                                                  "(whole days of 8). Default 2920 (a year); "
                                                  "80 with --quick")
    parser.add_argument("--climatenet-steps", type=int,
                        help="the first steps, for ClimateNet. Default 24; 16 with --quick")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[0]}x{QUICK[1]} masks, "
                        "fewer steps, one repeat")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, help="climseg-events runs per --jobs over all "
                                                    "the steps (at least 3 over ClimateNet's). "
                                                    "Default 3")
    parser.add_argument("--climatenet", help="a copy of the ClimateNet repository (with the "
                                             "numpy 2 fix); without it, climseg-events only")
    parser.add_argument("--climatenet-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--masks", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.climatenet_worker:
        return climatenet_worker(args)
    height, width = (args.height or (QUICK if args.quick else FULL)[0],
                     args.width or (QUICK if args.quick else FULL)[1])
    steps = args.steps or (80 if args.quick else 2920)
    cn_steps = min(args.climatenet_steps or (16 if args.quick else 24), steps)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.climatenet:
        check_climatenet(args.climatenet)
    paths, truth = make_masks(cache_dir(height, width, args.seed), steps, height, width,
                              args.seed)
    steps = len(paths) * STEPS_PER_FILE
    cn_paths = paths[:-(-cn_steps // STEPS_PER_FILE)]
    cn_steps = len(cn_paths) * STEPS_PER_FILE
    result = {"input": f"{height}x{width}", "steps": steps, "seed": args.seed,
              "true_tracks": true_counts(truth, len(paths)), "climseg": {}}
    with tempfile.TemporaryDirectory(prefix="climseg-bench-events-") as work:
        for label, files in (("all", paths), ("climatenet_steps", cn_paths)):
            runs = {1: [], 2: []}
            for _ in range(repeats if label == "all" else max(repeats, 3)):
                for jobs in (1, 2):
                    runs[jobs].append(run_climseg(files, jobs, work))
                    print(f"climseg-events --jobs {jobs}, {len(files) * STEPS_PER_FILE} steps: "
                          f"{runs[jobs][-1]['seconds']:.1f} s, peak RSS "
                          f"{runs[jobs][-1]['peak_rss_bytes'] / 1e6:.0f} MB", flush=True)
            result["climseg"][label] = {
                "steps": len(files) * STEPS_PER_FILE,
                **{f"jobs{j}": {"seconds": [r["seconds"] for r in rs],
                                "median_seconds": statistics.median(r["seconds"] for r in rs),
                                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
                                "tracks": rs[0]["tracks"]} for j, rs in runs.items()}}
    result["climseg"]["climatenet_steps"]["true_tracks"] = true_counts(truth, len(cn_paths))
    if args.climatenet:
        result["climatenet"] = {}
        for label, kwargs in (("defaults", {}), ("agree", AGREE)):
            run = run_climatenet(args.climatenet, cn_paths, cn_steps, kwargs)
            result["climatenet"][label] = run
            print(f"ClimateNet track_events ({label}), {cn_steps} steps: {run['seconds']:.1f} s "
                  f"({run['wall_seconds']:.1f} s with start-up and loading), peak RSS "
                  f"{run['peak_rss_bytes'] / 1e6:.0f} MB, tracks {run['tracks']}", flush=True)
        result["speedups"] = speedups(result)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
