"""data.model_output: model output as models write it, read on the canonical grid."""

import os

import numpy as np
import pytest
from model_output_files import synthetic_steps, write_model_output

from data.errors import DataFileError
from data.layouts import CHANNELS
from data.model_output import ModelOutput, parse_rename

H, W = 16, 24


@pytest.fixture(scope="module")
def steps():
    return synthetic_steps(3, H, W, seed=4)


@pytest.mark.parametrize("layout", [
    {},
    {"order": ("time", "lon", "lat")},  # dims matched by name, not by position
    {"order": ("lat", "lon", "time")},
    {"descending": True},
    {"lon180": True},
    {"descending": True, "lon180": True, "file_format": "NETCDF3_CLASSIC"},
    {"file_format": "NETCDF3_64BIT"},
], ids=["cam5", "time-lon-lat", "lat-lon-time", "lat-descending", "lon-180", "nc3-classic",
        "nc3-64bit"])
def test_every_layout_reads_as_the_canonical_grid(tmp_path, steps, layout):
    fields, labels = steps
    path = write_model_output(tmp_path / "h2.nc", fields, labels, **layout)
    with ModelOutput(path, channels="TMQ,PSL,U850") as out:
        assert (out.num_times, out.grid) == (3, (H, W))
        np.testing.assert_allclose(np.diff(out.lat_values) > 0, True)
        assert out.lon_values[0] == 0 and np.all(np.diff(out.lon_values) > 0)
        for t in range(3):
            got, truth = out.read(t)
            np.testing.assert_array_equal(got, fields[t][..., [0, 7, 1]])
            np.testing.assert_array_equal(truth, labels[t])
        values, attrs = out.coordinate("time")
        np.testing.assert_array_equal(values, [0, 0.125, 0.25])
        assert (attrs["units"], attrs["calendar"]) == ("days since 2106-01-01 00:00:00", "noleap")


def test_subsets_and_other_names(tmp_path, steps):
    fields, _ = steps
    path = write_model_output(tmp_path / "h2.nc", fields, channels=["TMQ", "U850", "V850", "PSL"],
                              rename={"TMQ": "PRW"})
    rename = parse_rename("PRW=tmq")
    assert rename == {"PRW": "TMQ"}
    with ModelOutput(path, channels="TMQ,U850,V850,PSL", rename=rename) as out:
        np.testing.assert_array_equal(out.read(1)[0], fields[1][..., [0, 1, 2, 7]])
        assert out.read(1)[1] is None  # no labels in the file
    with pytest.raises(DataFileError) as err:
        ModelOutput(path, channels="TMQ,PSL")
    assert str(err.value) == (f"{path}: has no variable TMQ for channel TMQ; found PRW, PSL, "
                              "U850, V850; give --channels, or --rename FILE_NAME=CHANNEL for "
                              "other names")
    with pytest.raises(DataFileError, match="has no variable PS for channel PS"):
        ModelOutput(path, channels="TMQ,PS", rename=rename)
    only_psl = write_model_output(tmp_path / "psl.nc", fields, channels=["PSL"])
    with pytest.raises(DataFileError, match="has no variable PRW or TMQ for channel TMQ"):
        ModelOutput(only_psl, channels="TMQ", rename=rename)
    with pytest.raises(ValueError, match="'PRW': expected FILE_NAME=CHANNEL"):
        parse_rename("PRW")
    with pytest.raises(ValueError, match="'PRW=WATER': expected FILE_NAME=CHANNEL"):
        parse_rename("PRW=WATER")


def test_unreadable_and_bad_files_are_named(tmp_path, steps):
    fields, labels = steps
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x89HDF not really")
    with pytest.raises(DataFileError, match=rf"^{junk}: cannot be read as netCDF"):
        ModelOutput(junk)
    holes = fields.copy()
    holes[2, 3, 4, 7] = np.nan
    path = write_model_output(tmp_path / "holes.nc", holes)
    with ModelOutput(path) as out:
        out.read(1)
        with pytest.raises(DataFileError, match=r"time step 2: PSL hold NaN, Inf or missing"):
            out.read(2)
    bad = labels.copy()
    bad[0, 0, 0] = 7
    path = write_model_output(tmp_path / "labels.nc", fields, bad)
    with ModelOutput(path) as out, pytest.raises(DataFileError, match="LABELS holds values "
                                                                       "outside the classes"):
        out.read(0)


def test_damaged_compressed_data_and_empty_time_are_named(tmp_path):
    import xarray as xr

    from data.files import num_batches
    from data.layouts import file_samples

    rng = np.random.default_rng(0)
    variables = {name: (("time", "lat", "lon"), rng.random((4, 32, 48)).astype(np.float32))
                 for name in CHANNELS}
    coords = {"time": ("time", np.arange(4.0), {"units": "days since 2000-01-01"}),
              "lat": ("lat", np.linspace(-89, 89, 32), {"units": "degrees_north"}),
              "lon": ("lon", np.arange(48) * 7.5, {"units": "degrees_east"})}
    path = tmp_path / "z.nc"
    xr.Dataset(variables, coords=coords).to_netcdf(
        path, encoding={name: {"zlib": True, "chunksizes": (1, 32, 48)} for name in CHANNELS})
    assert num_batches(tmp_path, 1, training=True) == 4  # samples, not files
    damaged = bytearray(path.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 3000] = bytes(b ^ 0xFF for b in damaged[middle:middle + 3000])
    path.write_bytes(bytes(damaged))
    problems = []
    with ModelOutput(path) as out:  # the metadata still reads
        for t in range(out.num_times):
            try:
                out.read(t)
            except DataFileError as e:
                problems.append(str(e))
    assert problems and all(p.startswith(f"{path}: time step ") and
                            "cannot be read (damaged or truncated file?)" in p for p in problems)
    empty = tmp_path / "empty" / "e.nc"
    empty.parent.mkdir()
    xr.Dataset({"TMQ": (("time", "lat", "lon"), np.zeros((0, 32, 48), np.float32))},
               coords={**coords, "time": ("time", np.zeros(0), coords["time"][2])}
               ).to_netcdf(empty, unlimited_dims=["time"])
    with pytest.raises(DataFileError, match=rf"^{empty}: has no time steps \(time is empty\); "
                                            "expected at least one"):
        file_samples([str(empty)])


def test_threads_read_and_write_netcdf_at_once(tmp_path, steps):
    """The pipelines' reader threads and the mask writer share netCDF's HDF5 library,
    which is not thread-safe: concurrent opens, reads, evictions and writes neither
    crash the process (a segmentation fault without the lock) nor mix up values."""
    from conftest import WORKERS_DIR, run_python

    fields, labels = steps
    for n in range(12):
        write_model_output(tmp_path / f"f{n:02d}.nc", fields[:3], labels[:3],
                           channels=["TMQ", "U850", "V850", "PSL"],
                           file_format="NETCDF3_64BIT" if n % 4 == 3 else "NETCDF4")
    proc = run_python([WORKERS_DIR / "netcdf_threads.py", tmp_path], timeout=300, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "read 360 steps in 6 threads while writing" in proc.stdout


def test_metadata_is_read_once_per_file_and_again_when_it_changes(tmp_path, steps):
    from data.layouts import file_samples, inspect_file

    fields, labels = steps
    path = tmp_path / "h2.nc"
    write_model_output(path, fields[:2], labels[:2], channels=["TMQ", "PSL"])
    first = inspect_file(str(path))
    assert first.num_times == 2 and inspect_file(str(path)) is first  # not read again
    assert file_samples([str(path)]) == [(str(path), 0), (str(path), 1)]
    os.remove(path)  # rewritten with another number of steps: read afresh
    write_model_output(path, fields, labels, channels=["TMQ", "PSL"])
    os.utime(path, ns=(1, 1))  # a different modification time even on a coarse clock
    assert inspect_file(str(path)).num_times == 3
    assert len(file_samples([str(path)])) == 3
