"""climseg-predict: batches, ranks, resuming, other grids, and its alias `train.py predict`."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import (
    TESTS_DIR,
    WORKERS_DIR,
    cf_problems,
    check_main,
    read_masks,
    run_horovod,
    run_main,
    run_python,
    worker_env,
)

import data
from inference.predict import main as predict

TRAIN = str(TESTS_DIR.parent / "train.py")
PREDICT = str(TESTS_DIR.parent / "inference" / "predict.py")
TINY = ["--model", "tiramisu", "--model-option", "blocks=[1,1,2]", "--model-option",
        "growth_rate=4", "--model-option", "initial_filters=8", "--model-option", "kernel_size=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data.generate(root / "train", 8, 64, 96, seed=1)
    data.generate(root / "val", 5, 64, 96, seed=2)
    import train

    check_main(train.main, [*TINY, "--data-train", root / "train", "--output-dir", root / "run",
                            "--epochs", "1", "--wandb-mode", "disabled"])
    return root, root / "run" / "checkpoints" / "best"


@pytest.fixture(scope="module")
def two_ranks(trained, tmp_path_factory):
    """The tests' two-rank climseg-predict runs, in one horovodrun launch (one TensorFlow
    start-up per rank for the three): `(directory, {run: rank 0's lines}, all stdout)`.

    Their inputs are here for the tests to predict alone: `runs/` (three model-output
    files of the same fields, in three layouts) and `year/year.nc` (five steps).
    """
    from model_output_files import synthetic_steps, write_model_output

    root, best = trained
    base = tmp_path_factory.mktemp("two_ranks")
    fields, labels = synthetic_steps(3, 64, 96, seed=9)
    runs = base / "runs"
    runs.mkdir()
    write_model_output(runs / "a.h2.nc", fields, labels)
    write_model_output(runs / "b.h2.nc", fields, labels, order=("time", "lon", "lat"),
                       descending=True, lon180=True, file_format="NETCDF3_CLASSIC")
    write_model_output(runs / "c.h2.nc", fields, labels, rename={"TMQ": "PRW"},
                       file_format="NETCDF3_64BIT")
    (base / "year").mkdir()
    write_model_output(base / "year" / "year.nc", synthetic_steps(5, 64, 96, seed=13)[0])
    checkpoint = ["--checkpoint", str(best)]
    runs_json = {
        "val": [*checkpoint, "--input", str(root / "val"), "--output-dir", str(base / "val"),
                "--batch-size", "2", "--no-maps"],
        "model output": [*checkpoint, "--input", str(runs), "--output-dir",
                         str(base / "model output"), "--rename", "PRW=TMQ", "--no-maps",
                         "--probabilities", "byte"],
        "year": [*checkpoint, "--input", str(base / "year"), "--no-maps", "--probabilities",
                 "byte", "--output-dir", str(base / "year out")],
    }
    (base / "runs.json").write_text(json.dumps(runs_json))
    proc = run_horovod([WORKERS_DIR / "predict_runs.py", base / "runs.json"])
    lines, name = {}, None
    for line in proc.stdout.splitlines():
        if "climseg-test: run " in line:
            name = line.split("climseg-test: run ", 1)[1]
            lines[name] = []
        elif name is not None and "climseg-test: " not in line:
            lines[name].append(line)
    assert sorted(lines) == sorted(runs_json), proc.stdout[-4000:]
    return base, {name: "\n".join(run) for name, run in lines.items()}, proc.stdout


def _masks(directory):
    out = {}
    for path in sorted(glob.glob(str(directory / "*.mask.nc"))):
        out[os.path.basename(path)] = read_masks(path)
    return out


@pytest.mark.slow
@pytest.mark.horovod
def test_two_ranks_and_batches_give_the_same_files_written_once(trained, two_ranks, tmp_path,
                                                                capfd):
    root, best = trained
    one, two = tmp_path / "one", two_ranks[0] / "val"
    proc = run_main(predict, ["--checkpoint", best, "--input", root / "val", "--output-dir",
                              one, "--batch-size", "1"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert "5 files (5 samples to predict) on 1 rank(s), batch 1" in proc.stdout
    assert "climseg-predict: 5/5 samples, " in proc.stdout and "samples/s" in proc.stdout
    stdout = two_ranks[1]["val"]  # horovodrun ... predict.py --batch-size 2 --no-maps
    assert "5 files (5 samples to predict) on 2 rank(s), batch 2" in stdout
    assert stdout.count("climseg-predict: masks in") == 1  # rank 0 only
    assert two_ranks[2].count("climseg-predict: masks in") == len(two_ranks[1])  # in all runs
    names = sorted(os.listdir(two))
    assert len(names) == 5 and all(n.endswith(".mask.nc") for n in names)
    for name in names:  # byte for byte
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert len(glob.glob(str(one / "*.mask.png"))) == 5
    # The IoU of all ranks, as numpy computes it from the masks and labels.
    confusion = np.zeros((3, 3), np.int64)
    for name, mask in _masks(two).items():
        _, labels = data.read_sample(str(root / "val" / name.replace(".mask.nc", ".h5")))
        confusion += np.bincount(3 * labels.ravel() + mask.ravel(), minlength=9).reshape(3, 3)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert f"mean {np.nanmean(iou):.3f}" in stdout


@pytest.mark.slow
def test_a_rerun_after_sigkill_finishes_the_rest(trained, tmp_path):
    root, best = trained
    many = tmp_path / "many"
    data.generate(many, 24, 64, 96, seed=5, stats=False)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = ["--checkpoint", best, "--input", many, "--batch-size", "1"]
    check_main(predict, [*args, "--output-dir", whole])  # the reference, in this process
    proc = subprocess.Popen([sys.executable, PREDICT, *map(str, args), "--output-dir",
                             str(killed)], env=worker_env(2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(glob.glob(str(killed / "*.mask.nc"))) < 3:
        assert proc.poll() is None and time.time() < deadline, "no masks written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(glob.glob(str(killed / "*.mask.nc")))
    assert 3 <= len(done) < 24
    before = {p: os.path.getmtime(p) for p in done}
    rerun = run_python([PREDICT, *args, "--output-dir", killed])
    assert f"{len(done)} already done in {killed}" in rerun.stdout
    assert {p: os.path.getmtime(p) for p in done} == before  # not predicted again
    assert not [n for n in os.listdir(killed) if ".tmp-" in n]
    assert sorted(os.listdir(killed)) == sorted(os.listdir(whole))
    for name in os.listdir(whole):
        if name.endswith(".mask.nc"):
            assert (whole / name).read_bytes() == (killed / name).read_bytes(), name


@pytest.mark.slow
def test_other_grids_and_the_alias(trained, tmp_path, capfd):
    import train

    root, best = trained
    data.generate(tmp_path / "small", 2, 32, 48, seed=3, stats=False)
    proc = run_main(train.main, ["predict", "--checkpoint", best, "--input", tmp_path / "small",
                                 "--output-dir", tmp_path / "out", "--no-maps"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert "tiramisu at 32x48" in proc.stdout
    assert {m.shape for m in _masks(tmp_path / "out").values()} == {(32, 48)}
    data.generate(tmp_path / "odd", 1, 30, 44, seed=4, stats=False)
    proc = run_main(predict, ["--checkpoint", best, "--input", tmp_path / "odd",
                              "--output-dir", tmp_path / "bad"], capfd)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (f"climseg-predict: error: --input: {tmp_path / 'odd'}/data-2106-01-01-00-1.h5 has a "
            "30x44 grid; the checkpoint's tiramisu was trained at 64x96 and cannot be built at "
            "30x44") in proc.stderr
    assert not os.path.exists(tmp_path / "bad")  # nothing written


@pytest.mark.slow
@pytest.mark.horovod
def test_model_output_files_give_the_masks_of_their_samples_as_cf_netcdf(trained, two_ranks,
                                                                        tmp_path, capfd):
    import xarray as xr
    from model_output_files import synthetic_steps

    root, best = trained
    fields, labels = synthetic_steps(3, 64, 96, seed=9)  # those of two_ranks' runs/
    samples = tmp_path / "samples"  # the same fields, one HDF5 sample per time step
    samples.mkdir()
    for t in range(3):
        with h5py.File(samples / f"step-{t}.h5", "w") as f:
            f["climate/data"] = fields[t]
            f["climate/labels_0"] = labels[t]
    runs = two_ranks[0] / "runs"  # a.h2.nc; b: (lon, lat), descending, -180..180; c: PRW
    check_main(predict, ["--checkpoint", best, "--input", samples, "--output-dir",
                         tmp_path / "expected", "--no-maps"])
    expected = np.stack([m for _, m in sorted(_masks(tmp_path / "expected").items())])
    proc = run_main(predict, ["--checkpoint", best, "--input", runs, "--output-dir",
                              tmp_path / "out", "--batch-size", "2", "--rename", "PRW=TMQ",
                              "--probabilities", "byte"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert "3 files (9 samples to predict)" in proc.stdout
    assert len(glob.glob(str(tmp_path / "out" / "a.h2.mask.t000*.png"))) == 3
    for name in ("a", "b", "c"):
        path = tmp_path / "out" / f"{name}.h2.mask.nc"
        with xr.open_dataset(path, decode_times=False) as masks:
            np.testing.assert_array_equal(masks["mask"].values, expected, err_msg=name)
            assert masks["mask"].dims == ("time", "lat", "lon")
            assert masks["mask"].attrs["flag_meanings"] == \
                "background tropical_cyclone atmospheric_river"
            np.testing.assert_array_equal(masks["time"].values, [0, 0.125, 0.25])
            assert masks["time"].attrs["calendar"] == "noleap"
            assert masks["lat"].attrs["units"] == "degrees_north"
        with xr.open_dataset(path) as decoded:  # cftime: the model's calendar
            assert str(decoded["time"].values[1]) == "2106-01-01 03:00:00"
    # IoU from the files' LABELS: three times the samples' confusion.
    assert "IoU background" in proc.stdout

    # Two ranks write the same netCDF files, byte for byte, each once (horovodrun ...
    # predict.py --input runs --rename PRW=TMQ --no-maps --probabilities byte).
    two = two_ranks[0] / "model output"
    assert sorted(os.listdir(two)) == ["a.h2.mask.nc", "b.h2.mask.nc", "c.h2.mask.nc"]
    for name in os.listdir(two):
        assert (two / name).read_bytes() == (tmp_path / "out" / name).read_bytes()

    # The IOOS compliance checker finds no CF problem (masks and packed probabilities).
    assert cf_problems(tmp_path / "out" / "b.h2.mask.nc", tmp_path / "cf.json") == ([], True)

    # A missing variable is one line naming the file and what is there.
    proc = run_main(predict, ["--checkpoint", best, "--input", runs / "c.h2.nc",
                              "--output-dir", tmp_path / "bad"], capfd)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"--input: {runs / 'c.h2.nc'}: has no variable TMQ for channel TMQ" in proc.stderr


@pytest.mark.slow
def test_a_bad_time_step_fails_its_file_only_and_names_collide_never(trained, tmp_path,
                                                                      capfd):
    from model_output_files import synthetic_steps, write_model_output

    root, best = trained
    fields, _ = synthetic_steps(2, 64, 96, seed=11)
    runs = tmp_path / "runs"
    runs.mkdir()
    write_model_output(runs / "good.nc", fields)
    holes = fields.copy()
    holes[1, 5, 5, 0] = np.nan  # missing values in TMQ at time step 1
    write_model_output(runs / "holes.nc", holes)
    proc = run_main(predict, ["--checkpoint", best, "--input", runs, "--output-dir",
                              tmp_path / "out", "--no-maps"], capfd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert "error: 1 file(s) not predicted" in proc.stdout
    assert f"{runs / 'holes.nc'}: time step 1: TMQ hold NaN, Inf or missing values" in proc.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["good.mask.nc"]
    # Two inputs that would write the same mask name are refused before any work.
    (tmp_path / "other").mkdir()
    write_model_output(tmp_path / "other" / "good.nc", fields)
    proc = run_main(predict, ["--checkpoint", best, "--input", runs / "good.nc",
                              tmp_path / "other" / "good.nc", "--output-dir", tmp_path / "two"],
                    capfd)
    assert proc.returncode == 2 and "would both write good.mask.*" in proc.stderr
    assert not os.path.exists(tmp_path / "two")


@pytest.mark.slow
@pytest.mark.horovod
def test_the_steps_of_one_file_split_over_ranks_give_the_same_file(trained, two_ranks,
                                                                    tmp_path):
    import xarray as xr

    root, best = trained
    runs = two_ranks[0] / "year"  # year.nc: five steps
    args = ["--checkpoint", best, "--input", runs, "--no-maps", "--probabilities", "byte"]
    check_main(predict, [*args, "--output-dir", tmp_path / "one", "--batch-size", "2"])
    two = two_ranks[0] / "year out"  # horovodrun ... predict.py *args (batch 1 per rank)
    assert "1 files (5 samples to predict) on 2 rank(s)" in two_ranks[1]["year"]
    assert os.listdir(two) == ["year.mask.nc"]  # the parts are merged and gone
    assert (tmp_path / "one" / "year.mask.nc").read_bytes() == \
        (two / "year.mask.nc").read_bytes()
    with xr.open_dataset(tmp_path / "one" / "year.mask.nc") as out:
        probs = np.stack([out[f"probability_{name}"].values for name in data.CLASSES], -1)
        masks = out["mask"].values
    assert probs.shape == (5, 64, 96, 3)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=2e-2)  # three bytes of 1/255
    # The mask is the most probable class wherever the bytes tell them apart.
    top = np.sort(probs, -1)
    clear = top[..., -1] - top[..., -2] > 2 / 255
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(probs.argmax(-1)[clear], masks[clear])


@pytest.mark.slow
def test_unusable_files_stop_before_any_work_or_are_skipped_and_listed(trained, tmp_path,
                                                                        capfd):
    from model_output_files import synthetic_steps, write_model_output

    root, best = trained
    fields, _ = synthetic_steps(2, 64, 96, seed=12)
    runs = tmp_path / "runs"
    runs.mkdir()
    write_model_output(runs / "good.nc", fields)
    (runs / "empty.nc").write_bytes(b"")
    (runs / "noise.h5").write_bytes(os.urandom(4096))
    args = ["--checkpoint", best, "--input", runs, "--no-maps"]
    proc = run_main(predict, [*args, "--output-dir", tmp_path / "out"], capfd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # refused before any work
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"climseg-predict: error: --input: {runs / 'empty.nc'}: cannot be read as netCDF")
    assert "(and 1 more); fix or remove the file, or give --skip-bad-files" in proc.stderr
    assert not os.path.exists(tmp_path / "out")
    proc = run_main(predict, [*args, "--output-dir", tmp_path / "out", "--skip-bad-files"],
                    capfd)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 unusable file(s) (--skip-bad-files):" in proc.stdout
    assert f"  {runs / 'noise.h5'}: cannot be opened as HDF5" in proc.stdout
    assert os.listdir(tmp_path / "out") == ["good.mask.nc"]


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _drop_a_layer(path):
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
        del f[names[len(names) // 2]]


def _edit_meta(change):
    def edit(checkpoint):
        import json

        meta = json.loads((checkpoint / "meta.json").read_text())
        change(meta)
        (checkpoint / "meta.json").write_text(json.dumps(meta))
    return edit


CHECKPOINT_CASES = {
    "missing": (lambda c: shutil.rmtree(c), "--checkpoint: {c} does not exist"),
    "weights truncated": (lambda c: _truncate(c / "model-weights.h5"),
                          "--checkpoint {c}: {c}/model-weights.h5 cannot be loaded into its "
                          "tiramisu (truncated, damaged, or of another model?)"),
    "weights empty": (lambda c: (c / "model-weights.h5").write_bytes(b""),
                      "--checkpoint {c}: {c}/model-weights.h5 cannot be loaded"),
    "weights of another model": (lambda c: _drop_a_layer(c / "model-weights.h5"),
                                 "--checkpoint {c}: {c}/model-weights.h5 cannot be loaded"),
    "meta without model_kwargs": (_edit_meta(lambda m: m.pop("model_kwargs")),
                                  "--checkpoint: {c}/meta.json: 'model_kwargs' should hold the "
                                  "input_shape [H, W, C], found 'no such key'"),
    "meta naming another model": (_edit_meta(lambda m: m.update(model="unet9")),
                                  "--checkpoint {c}: its meta.json names model 'unet9', which "
                                  "this climseg does not have"),
    "output dir is a file": (None, "--output-dir: {o} is a file; expected a directory"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_a_bad_checkpoint_or_output_dir_is_one_line_with_status_2(trained, tmp_path, case,
                                                                   capfd):
    root, best = trained
    damage, message = CHECKPOINT_CASES[case]
    checkpoint, out = tmp_path / "ckpt", tmp_path / "out"
    shutil.copytree(best, checkpoint)
    if damage is None:
        out.write_text("not a directory")
    else:
        damage(checkpoint)
    proc = run_main(predict, ["--checkpoint", checkpoint, "--input", root / "val",
                              "--output-dir", out, "--no-maps"], capfd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("climseg-predict: error: ")
    assert message.format(c=checkpoint, o=out) in last
    assert damage is None or not out.exists()  # nothing written


@pytest.mark.slow
def test_debug_shows_the_traceback_with_the_same_line(trained, tmp_path):
    root, best = trained
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(best, checkpoint)
    _truncate(checkpoint / "model-weights.h5")
    args = [PREDICT, "--checkpoint", checkpoint, "--input", root / "val", "--output-dir",
            tmp_path / "out"]
    plain = run_python(args, check=False)
    debug = run_python([*args, "--debug"], check=False)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_no_partial_file(trained,
                                                                               tmp_path,
                                                                               capfd):
    from model_output_files import synthetic_steps, write_model_output

    root, best = trained
    fields, _ = synthetic_steps(2, 64, 96, seed=14)
    write_model_output(tmp_path / "a.nc", fields)
    out = tmp_path / "out"
    (out / "a.mask.t0001.png").mkdir(parents=True)  # where the second map would go
    proc = run_main(predict, ["--checkpoint", best, "--input", tmp_path / "a.nc",
                              "--output-dir", out], capfd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"climseg-predict: error: --output-dir {out}: cannot write the outputs of "
        f"{tmp_path / 'a.nc'}: Is a directory; the files completed before are intact and a "
        "rerun does the rest")
    assert sorted(os.listdir(out)) == ["a.mask.t0000.png", "a.mask.t0001.png"]  # no .tmp-


def test_a_file_in_other_units_is_warned_of_once(trained, tmp_path, capfd):
    from model_output_files import synthetic_steps, write_model_output

    root, best = trained
    fields, _ = synthetic_steps(3, 64, 96, seed=4)
    (tmp_path / "in").mkdir()
    write_model_output(tmp_path / "in" / "pa.nc", fields)
    hpa = fields.copy()
    hpa[..., data.CHANNELS.index("PSL")] /= 100.0  # hPa, where training had Pa
    write_model_output(tmp_path / "in" / "hpa.nc", hpa)
    proc = run_main(predict, ["--checkpoint", best, "--input", tmp_path / "in",
                              "--output-dir", tmp_path / "out", "--no-maps"], capfd)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr  # once for its 3 steps, none for pa.nc
    assert warnings[0].startswith(f"climseg-predict: warning: {tmp_path / 'in' / 'hpa.nc'}: "
                                  "PSL mean ")
    assert warnings[0].endswith("the plausible range by the checkpoint's statistics: other "
                                "units? (Pa for hPa, say: fix the file or --rename); its masks "
                                "are written but may be wrong")
    assert sorted(os.listdir(tmp_path / "out")) == ["hpa.mask.nc", "pa.mask.nc"]


def test_implausible_channels_against_an_independent_count():
    stats = data.Stats(minval=np.zeros(16), maxval=np.full(16, 10.0), path="s.h5")
    fields = np.full((4, 4, 3), 5.0)
    fields[..., 1] = 25.0  # past max + width (20)
    fields[..., 2] = -9.0  # within min - width (-10)
    assert data.implausible_channels(stats, fields, [3, 7, 9]) == [
        (data.CHANNELS[7], 25.0, -10.0, 20.0)]
    zscore = data.Stats(None, None, mean=np.full(16, 100.0), std=np.ones(16), path="s.h5")
    assert [name for name, *_ in data.implausible_channels(zscore, fields, [3, 7, 9])] == [
        data.CHANNELS[3], data.CHANNELS[7], data.CHANNELS[9]]
