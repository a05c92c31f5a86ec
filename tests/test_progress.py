"""data.progress: the progress line of the commands."""

import io
import types

from data.progress import Progress


def _clock(monkeypatch, times):
    """data.progress's clock (only its own) reads `times` in turn."""
    clock = types.SimpleNamespace(perf_counter=lambda: next(times))
    monkeypatch.setattr("data.progress.time", clock)


def test_rate_time_left_and_one_rank_reporting_for_all(monkeypatch):
    clock = iter([0.0, 2.0, 4.0, 9.0])
    _clock(monkeypatch, clock)
    out = io.StringIO()
    # Rank 0 holds 4 of the 12 samples: each of its samples stands for 3.
    meter = Progress(12, "climseg-predict", stream=out, interval=1.0, unit="samples",
                     rate=True, scale=12 / 4)
    meter.update(1)  # t = 2: 3 done, 1.5 a second, 9 left
    meter.update(2)  # t = 4: 9 done
    meter.close()  # t = 9: all done
    assert out.getvalue().splitlines() == [
        "climseg-predict: 3/12 samples, 1.50 samples/s, ETA 6 s, 2.0 s",
        "climseg-predict: 9/12 samples, 2.25 samples/s, ETA 1 s, 4.0 s",
        "climseg-predict: 12/12 samples, 1.33 samples/s, 9.0 s"]


def test_files_and_bytes_without_rate_and_a_silent_rank(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 0.0, 0.0, 0.0])
    _clock(monkeypatch, clock)
    out = io.StringIO()
    meter = Progress(2, "climseg-stage", stream=out, interval=10.0)
    meter.update(1, 4e6)  # the first line is printed at once
    meter.update(1, 6e6)  # the last item: printed though the interval has not passed
    meter.close()  # already printed
    assert out.getvalue().splitlines() == ["climseg-stage: 1/2 files, 4 MB, 8 MB/s, 0.5 s",
                                           "climseg-stage: 2/2 files, 10 MB, 10 MB/s, 1.0 s"]
    quiet = io.StringIO()
    Progress(3, "x", enabled=False, stream=quiet).close()
    Progress(0, "x", stream=quiet).close()  # nothing to do: no line
    assert quiet.getvalue() == ""
