"""bench/events.py and the report's events section: speed-ups, goals, and a tiny real run."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import report
from bench.events import AGREE, RESULT_TAG, speedups

BENCH = Path(__file__).resolve().parents[1] / "bench" / "events.py"


def _result():
    def ours(steps, seconds, rss, tc, ar):
        return {"seconds": [seconds], "median_seconds": seconds, "peak_rss_bytes": rss,
                "tracks": {"tropical_cyclone": tc, "atmospheric_river": ar}}

    result = {
        "input": "768x1152", "steps": 480, "true_tracks": {"tropical_cyclone": 40,
                                                           "atmospheric_river": 90},
        "climseg": {
            "all": {"steps": 480, "jobs1": ours(480, 96.0, 300e6, 40, 90),
                    "jobs2": ours(480, 60.0, 600e6, 40, 90)},
            "climatenet_steps": {"steps": 24, "jobs1": ours(24, 8.0, 290e6, 9, 11),
                                 "jobs2": ours(24, 10.0, 580e6, 9, 11),
                                 "true_tracks": {"tropical_cyclone": 9,
                                                 "atmospheric_river": 11}}},
        "climatenet": {
            "defaults": {"seconds": 120.0, "steps": 24, "settings": {},
                         "peak_rss_bytes": 900e6,
                         "tracks": {"tropical_cyclone": 7, "atmospheric_river": 10}},
            "agree": {"seconds": 60.0, "steps": 24, "settings": AGREE,
                      "peak_rss_bytes": 800e6,
                      "tracks": {"tropical_cyclone": 9, "atmospheric_river": 11}}}}
    result["speedups"] = speedups(result)
    return result


def test_speedups_on_the_same_steps_and_per_step():
    s = _result()["speedups"]
    assert s["defaults_jobs1"] == {"same_steps": 120.0 / 8.0, "per_step": 5.0 / 0.2}
    assert s["agree_jobs2"] == {"same_steps": 6.0, "per_step": 2.5 / 0.125}


def test_report_events_section_and_issue_19_goals():
    results = {"machine": {"date": "2026-12-04 17:00", "cpu": "Intel(R) Xeon(R) Processor",
                           "cores": 2, "load_before": [0.5, 0.5, 0.5], "tensorflow": "2.18.1",
                           "onednn": "1"},
               "events": _result()}
    text = report.markdown(results)
    assert "## Goals (issues 7 and 19)" in text
    assert "| climseg-events --jobs 1 | 480 | 96.0 | 200 | 300 | 40, 90 |" in text
    assert ("| ClimateNet track_events (tc_drop_threshold=2, ar_drop_threshold=2, "
            "minimum_time_length=1) | 24 | 60.0 | 2500 | 800 | 9, 11 |") in text
    assert "| ClimateNet track_events (defaults) | 24 | 120.0 | 5000 | 900 | 7, 10 |" in text
    goals = {g: (m, ok) for g, m, ok in report.goals(results)}
    measured, ok = goals["climseg-events --jobs 1 >= 10x ClimateNet's track_events (its "
                         "defaults; 768x1152 masks)"]
    assert measured.startswith("15.0x on the same 24 steps (start-up included), 25.0x per "
                               "step over 480; at the thresholds where the rules agree 7.5x")
    assert ok is False  # 7.5x where the rules agree
    measured, ok = goals["the same tracks as ClimateNet where both rules agree (its "
                         "thresholds at 2 pixels and 1 step)"]
    assert ok and measured.startswith("tropical cyclone: climseg 9, ClimateNet 9, true 9")


def test_events_part_is_asked_for_and_passes_its_flags(monkeypatch):
    import bench.__main__ as suite

    assert "events" in suite.PARTS and "events" not in suite.DEFAULT_PARTS
    calls = []
    monkeypatch.setattr(suite, "_run", lambda script, args, timeout: calls.append(
        (script, args)) or 'EVENTS_RESULT {"steps": 8}\n')
    args = argparse.Namespace(full_size=False, quick=True, timeout=10, events_steps=240,
                              climatenet="/tmp/ClimateNet")
    assert suite.run_part("events", args) == {"steps": 8}
    assert calls[-1] == ("events.py", ["--quick", "--steps", 240, "--climatenet",
                                       "/tmp/ClimateNet"])


def test_a_tiny_run_against_a_stand_in_for_climatenet(tmp_path):
    # The stand-in gives every class one event id: the plumbing, not ClimateNet's rule.
    stand_in = tmp_path / "ClimateNet" / "climatenet"
    stand_in.mkdir(parents=True)
    (stand_in / "track_events.py").write_text(
        "def track_events(class_masks_xarray, **kwargs):\n"
        "    return class_masks_xarray.copy(data=class_masks_xarray.values.astype(int) * 1000)\n")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--height", "32", "--width", "48", "--steps", "16",
         "--climatenet-steps", "8", "--repeats", "1", "--climatenet", str(stand_in.parent)],
        capture_output=True, text=True, timeout=600,
        env={"CLIMSEG_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith(RESULT_TAG))
    result = json.loads(line[len(RESULT_TAG):])
    assert (result["steps"], result["climseg"]["climatenet_steps"]["steps"]) == (16, 8)
    assert result["climseg"]["all"]["jobs1"]["tracks"] == result["climseg"]["all"]["jobs2"][
        "tracks"] == result["true_tracks"]
    assert result["climatenet"]["agree"]["tracks"] == {"tropical_cyclone": 1,
                                                       "atmospheric_river": 1}
    assert set(result["speedups"]) == {"defaults_jobs1", "defaults_jobs2", "agree_jobs1",
                                       "agree_jobs2"}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "bench-events-32x48-seed0"]
