"""train.py end to end: real files, real Horovod ranks, W&B offline, resume, fine-tuning."""

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
import yaml
from conftest import (
    TESTS_DIR,
    check_main,
    read_masks,
    run_horovod,
    run_main,
    run_mpirun,
    run_python,
    worker_env,
)
from wandb_records import read_records, run_contents

import data
import train
from inference.predict import main as predict_main

TRAIN = str(TESTS_DIR.parent / "train.py")
# A Tiramisu small enough for two cores; no dropout, so runs are reproducible.
TINY = ["--model", "tiramisu", "--model-option", "blocks=[1,1,2]",
        "--model-option", "growth_rate=4", "--model-option", "initial_filters=8",
        "--model-option", "kernel_size=3", "--model-option", "dropout=0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    data.generate(root / "train", 12, 64, 96, seed=1)
    data.generate(root / "val", 5, 64, 96, seed=2)  # odd: validation shards differ
    return root


def _args(dataset, out, *extra):
    return [TRAIN, *TINY, "--data-train", dataset / "train", "--data-val", dataset / "val",
            "--output-dir", out, "--wandb-mode", "disabled", *extra]


def _train(args, capfd=None):
    """train.main on `args` (without the script) in this process, as the command runs."""
    return run_main(train.main, args, capfd)


def _trained(argv):
    """train.main on `argv` (as _args gives it) in this process; fails the test unless it
    ends with status 0."""
    return check_main(train.main, argv[1:])


def _final_weights(out):
    path = sorted(glob.glob(os.path.join(out, "checkpoints", "ckpt-*", "model-weights.h5")))[-1]
    weights = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: weights.__setitem__(name, obj[...])
                     if isinstance(obj, h5py.Dataset) else None)
    return weights


def _epochs(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["epochs"]


def _written_by(path, code):
    """Runs `code` (with sys, tensorflow as tf and zoo imported) to write `path`; returns it."""
    script = path.parent / f"{path.name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"import sys, climseg_tf, tensorflow as tf, zoo\n{code}\n")
    run_python([script, path])
    return path


# Values of metrics.json that measure the machine, not the training.
TIMINGS = ("samples_per_second", "samples_per_second_total", "flops_per_second",
           "parallel_efficiency", "seconds", "epoch_seconds")


def _training_record(out):
    return [{k: v for k, v in e.items() if k not in TIMINGS} for e in _epochs(out)]


def _kill_after(cmd, pattern, env):
    """Starts `cmd`, SIGKILLs it as soon as a file matching `pattern` exists."""
    proc = subprocess.Popen([sys.executable, *map(str, cmd)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob(str(pattern)):
        assert proc.poll() is None and time.time() < deadline, f"no {pattern}"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# --------------------------------------------------------------------------- flags

@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (["--model", "unet"], "argument --model: invalid choice: 'unet'"),
    (["--optimizer", "lamb", "--larc"], "--larc cannot wrap --optimizer lamb"),
    (["--channels", "TMQ,FOO"], "--channels: "),
    (["--lr-stages", "piece:x"], "--lr-stages: "),
    (["--lr-stages", "4096:0.1,8192"], "--lr-stages: '8192' is not POSITION:MULTIPLIER"),
    (["--class-weights", "1,2"], "--class-weights: expected 3 non-negative numbers, got '1,2'"),
    (["--freeze-backbone", "1"], "--freeze-backbone needs --init-checkpoint"),
    (["--model-option", "blocks"], "--model-option 'blocks': expected KEY=VALUE"),
    (["--model", "tiramisu", "--decoder", "bilinear"],
     "--decoder applies to --model deeplabv3plus, not tiramisu"),
    (["--model", "tiramisu", "--output-stride", "16"],
     "--output-stride applies to the DeepLabv3+ models, not tiramisu"),
    (["--data-val", "x"], "--data-val needs --data-train"),
    (["--model", "deeplabv3plus_tfm", "--init-checkpoint", "x", "--freeze-backbone", "1"],
     "need a model whose encoder is known: deeplabv3plus, tiramisu; not deeplabv3plus_tfm"),
    (["--wandb-mode", "cloud"], "argument --wandb-mode: invalid choice: 'cloud'"),
    # Weights that train nothing (the loss is exactly 0) or NaN.
    (["--class-weights", "0,0,0"], "--class-weights: '0,0,0' weighs every class 0"),
    (["--class-weights", "1,nan,1"], "--class-weights: expected 3 non-negative numbers"),
    # Every number checked where it is parsed: finite and in range.
    (["--lr", "inf"], "argument --lr: expected a finite number, got inf"),
    (["--lr", "1e400"], "argument --lr: expected a finite number, got 1e400"),
    (["--lr", "-1"], "argument --lr: expected a number > 0, got -1"),
    (["--warmup", "-5"], "argument --warmup: expected a number >= 0, got -5"),
    (["--warmup", "nan"], "argument --warmup: expected a finite number, got nan"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--weight-decay", "-1"], "argument --weight-decay: expected a number >= 0, got -1"),
    (["--focal-gamma", "nan"], "argument --focal-gamma: expected a finite number, got nan"),
    (["--channels", ""], "--channels: unknown channel '' in channels=''"),
    (["--lr-stages", "5:0.1,2:0.5"], "--lr-stages: MultiStageSchedule stage starts must "
                                     "increase; received [5.0, 2.0]"),
    (["--lr-stages", "5:-0.1"], "--lr-stages: MultiStageSchedule stage value must be a "
                                "number >= 0.0; received stage value=-0.1"),
    (["--lr-stages", "0:nan"], "stage value must be a number >= 0.0; received stage "
                               "value=nan"),
    (["--lr-stages", "piece:5:nan"], "stage value must be a number >= 0.0; received stage "
                                     "value=nan"),
    (["--nan-check-every", "0"], "argument --nan-check-every: expected an integer >= 1, got 0"),
    (["--accumulate", "0"], "argument --accumulate: expected an integer >= 1, got 0"),
    (["--accumulate", "2.5"], "argument --accumulate: expected an integer"),
    (["--accumulate", "2", "--gradient-lag", "1"],
     "--accumulate 2 cannot be combined with --gradient-lag"),
    (["--accumulate", "2", "--precision", "mixed_float16"],
     "--accumulate 2 cannot be combined with --precision mixed_float16"),
    (["--accumulate", "3", "--steps-per-epoch", "10"],
     "--steps-per-epoch 10 must be a multiple of --accumulate 3"),
    (["--accumulate", "2", "--checkpoint-every-steps", "5"],
     "--checkpoint-every-steps 5 must be a multiple of --accumulate 2"),
    (["--target-iou", "0"], "argument --target-iou: expected a number > 0, got 0"),
    (["--target-iou", "nan"], "argument --target-iou: expected a finite number, got nan"),
    (["--target-iou", "1.5"], "--target-iou must be at most 1 (a mean IoU), got 1.5"),
    (["--validate-every", "0"], "argument --validate-every: expected an integer >= 1, got 0"),
    (["--wandb-log-every", "0"], "argument --wandb-log-every: expected an integer >= 1, got 0"),
    (["--model", "tiramisu", "--kernels", "cpu"],
     "--kernels applies to --model deeplabv3plus, not tiramisu"),
    (["--kernels", "fast"], "argument --kernels: invalid choice: 'fast'"),
    (["--jit-compile", "--sync-bn"], "--jit-compile cannot compile --sync-bn's batch norm"),
])
def test_bad_flags_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_lr_stages_in_both_forms():
    args = train.parse_args(["--lr-stages", "4096:0.1,8192:0.01", "--lr-unit", "step"])
    assert args.lr_stage_list == [(4096.0, 0.1), (8192.0, 0.01)]
    assert train.parse_args(["--lr-stages", "piece:20:0.5"]).lr_stage_list == [(20, 0.5)]


def test_yaml_config_is_overridden_by_flags(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"lr": 0.5, "epochs": 3, "data-train": ["a", "b"],
                                      "larc": True}))
    args = train.parse_args(["--config", str(config), "--epochs", "4"])
    assert (args.lr, args.epochs, args.data_train, args.larc) == (0.5, 4, ["a", "b"], True)

    config.write_text("optimizer: rmsprop\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(config)])
    assert "optimizer: 'rmsprop' is not one of" in capsys.readouterr().err
    config.write_text("learning_rate: 0.1\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(config)])
    assert f"--config {config}: unknown option 'learning_rate'" in capsys.readouterr().err
    config.write_text("lr: [1, 2\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(config)])
    assert "not valid YAML" in capsys.readouterr().err
    config.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SystemExit):  # the safe loader refuses to build objects
        train.parse_args(["--config", str(config)])
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.slow
def test_help_groups_the_flags():
    proc = run_python([TRAIN, "--help"])
    for text in ("model:", "data:", "optimization:", "loss:", "precision:",
                 "outputs and resuming:", "fine-tuning:", "Weights & Biases:",
                 "deeplabv3plus", "deeplabv3plus_tfm", "tiramisu", "--gradient-lag"):
        assert text in proc.stdout


@pytest.mark.slow
def test_unwritable_output_dir_is_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _train([*TINY, "--output-dir", blocker / "run"])
    assert proc.returncode != 0
    assert f"--output-dir {blocker / 'run'}: cannot write there" in proc.stderr


@pytest.mark.slow
def test_missing_data_stats_and_checkpoint_name_the_flag(dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _train([*TINY, "--data-train", empty, "--output-dir", tmp_path / "a"])
    assert proc.returncode != 0
    assert f"train.py: error: --data-train: {empty}" in proc.stderr
    proc = _train([*TINY, "--data-train", dataset / "train", "--stats",
                   tmp_path / "nope.h5", "--output-dir", tmp_path / "b"])
    assert proc.returncode != 0
    assert f"train.py: error: --stats: {tmp_path / 'nope.h5'}: statistics file not found" \
        in proc.stderr
    proc = _train([*TINY, "--data-train", dataset / "train", "--init-checkpoint",
                   tmp_path / "nope.h5", "--output-dir", tmp_path / "c"])
    assert proc.returncode != 0
    assert f"--init-checkpoint: checkpoint {tmp_path / 'nope.h5'} does not exist" in proc.stderr


# --------------------------------------------------------------------------- training

@pytest.mark.slow
@pytest.mark.horovod
def test_two_ranks_match_one_process_with_the_same_global_batch(dataset, tmp_path):
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    lag = ["--gradient-lag", "1"]  # the lagged gradient is what ranks average
    proc = run_python(_args(dataset, one, "--epochs", "2", "--batch-size", "4",
                            "--wandb-mode", "offline", *lag), threads=2)
    run_horovod(_args(dataset, two, "--epochs", "2", "--batch-size", "2", *lag))

    a, b = _epochs(one)[-1], _epochs(two)[-1]
    # IoU sums confusion matrices over ranks: exact, although the 5 validation
    # files split 3 + 2 (the short rank gets a zero-weight padding batch).
    for key in ("loss", "mean_iou", "val_mean_iou", "val_iou_background", "val_iou_tc",
                "val_iou_ar"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    # val_loss is the mean of the ranks' means (the padding sample counts as a
    # loss of 0): off by O(1 / samples per rank), here 2-3 samples.
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.3)
    wa, wb = _final_weights(one), _final_weights(two)
    assert wa.keys() == wb.keys() and len(wa) > 5
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert "climseg: mean IoU" in proc.stdout

    # Two ranks resumed after epoch 1 end where the uninterrupted two did: the
    # checkpoint holds the ranks' mean lagged gradient.
    shutil.copytree(two, resumed)
    for name in os.listdir(resumed / "checkpoints"):
        if name.startswith("ckpt-e0002"):
            shutil.rmtree(resumed / "checkpoints" / name)
    run_horovod(_args(dataset, resumed, "--epochs", "2", "--batch-size", "2", *lag))
    for name, value in wb.items():
        np.testing.assert_allclose(_final_weights(resumed)[name], value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)

    # The run's record and W&B's offline run hold the same values.
    assert os.path.isfile(one / "curves.png") and os.path.isfile(one / "config.yaml")
    config, history = run_contents(glob.glob(str(one / "wandb" / "*run-*" / "run-*.wandb"))[0])
    assert config["model"] == "tiramisu" and config["global_batch_size"] == 4
    logged = [r for r in history if "epoch/val_mean_iou" in r]
    assert [r["epoch/val_mean_iou"] for r in logged] == pytest.approx(
        [e["val_mean_iou"] for e in _epochs(one)])
    assert sum("batch/loss" in r for r in history) == 2 * 3  # 12 files / 4 per step
    assert any("validation/samples/all_masks" in r for r in history)
    artifacts = [r.artifact for r in read_records(
        glob.glob(str(one / "wandb" / "*run-*" / "run-*.wandb"))[0])
        if r.WhichOneof("record_type") == "artifact"]
    assert [(a.name, a.type) for a in artifacts] == [("one-best", "model")]
    assert "model-weights.h5" in [m.path for m in artifacts[0].manifest.contents]

    # Inference from the best checkpoint: masks, maps and an IoU that numpy agrees with.
    pred = tmp_path / "pred"
    proc = run_python([TRAIN, "predict", "--checkpoint", one / "checkpoints" / "best",
                       "--input", dataset / "val", "--output-dir", pred])
    masks = sorted(glob.glob(str(pred / "*.mask.nc")))
    assert len(masks) == 5 and len(glob.glob(str(pred / "*.mask.png"))) == 5
    confusion = np.zeros((3, 3), np.int64)
    for path in masks:
        source = dataset / "val" / os.path.basename(path).replace(".mask.nc", ".h5")
        _, labels = data.read_sample(str(source))
        mask = read_masks(path)
        assert mask.shape == labels.shape
        confusion += np.bincount(3 * labels.ravel() + mask.ravel(), minlength=9).reshape(3, 3)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)  # absent: no IoU
    assert f"mean {np.nanmean(iou):.3f}" in proc.stdout


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(dataset, tmp_path):
    extra = ["--epochs", "4", "--gradient-lag", "1", "--warmup", "2", "--warmup-start", "0.1",
             "--optimizer", "adam"]
    whole, killed, mid = tmp_path / "whole", tmp_path / "killed", tmp_path / "mid"
    run_python(_args(dataset, whole, *extra, "--checkpoint-every-steps", "4",
                     "--keep-checkpoints", "20"))
    names = sorted(os.listdir(whole / "checkpoints"))
    assert "ckpt-e0001-s00000008" in names  # mid-epoch 2 (6 steps per epoch)
    assert "ckpt-e0001-s00000012" not in names  # the epoch's end writes ckpt-e0002-s00000012

    # A crash just after the mid-epoch checkpoint of step 8: resume from it.
    shutil.copytree(whole, mid)
    for name in names:
        if name != "best" and int(name.split("-s")[1]) > 8:
            shutil.rmtree(mid / "checkpoints" / name)
    resumed = run_python(_args(dataset, mid, *extra))
    assert "resuming from" in resumed.stdout and "ckpt-e0001-s00000008" in resumed.stdout
    for name, value in _final_weights(whole).items():
        np.testing.assert_allclose(_final_weights(mid)[name], value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)

    cmd = [sys.executable, *map(str, _args(dataset, killed, *extra))]
    proc = subprocess.Popen(cmd, env=worker_env(2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob(str(killed / "checkpoints" / "ckpt-e0002-*")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint of epoch 2"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_python(_args(dataset, killed, *extra))
    assert "resuming from" in resumed.stdout

    for name, value in _final_weights(whole).items():
        np.testing.assert_allclose(_final_weights(killed)[name], value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    rates = [e["learning_rate"] for e in _epochs(whole)]
    assert [e["learning_rate"] for e in _epochs(killed)] == pytest.approx(rates)
    assert [e["epoch"] for e in _epochs(killed)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_fine_tuning_from_other_classes_and_rgb_channels(dataset, tmp_path):
    source = _written_by(tmp_path / "rgb5.h5",
                         "m = zoo.get_model('tiramisu', input_shape=(64, 96, 3), num_classes=5, "
                         "blocks=[1,1,2], growth_rate=4, initial_filters=8, kernel_size=3, "
                         "dropout=0)\nm.save_weights(sys.argv[1])")
    proc = _trained(_args(dataset, tmp_path / "ft", "--epochs", "2", "--init-checkpoint",
                          source, "--freeze-backbone", "1", "--lr", "0.002",
                          "--lr-stages", "6:0.25", "--lr-unit", "step"))
    # 6 steps per epoch: the second epoch runs at a quarter of the rate.
    assert [e["learning_rate"] for e in _epochs(tmp_path / "ft")] == pytest.approx(
        [0.002, 0.0005])
    assert f"from {source}, adapted input channels of stem_conv" in proc.stdout
    assert "not loaded: logits_conv (shapes (1, 1, 20, 5), (5,) vs (1, 1, 20, 3), (3,))" \
        in proc.stdout
    assert "encoder frozen for epochs 1-1" in proc.stdout


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(dataset, tmp_path):
    out = tmp_path / "nan"
    _trained(_args(dataset, out, "--epochs", "1"))
    good = sorted(os.listdir(out / "checkpoints"))
    # Resumes from epoch 1, then diverges.
    proc = _train(_args(dataset, out, "--epochs", "3", "--lr", "1e30")[1:])
    assert proc.returncode == 1
    assert "the training loss became nan" in proc.stdout.lower()
    assert "last good checkpoint" in proc.stdout
    assert sorted(os.listdir(out / "checkpoints")) == good


@pytest.mark.slow
@pytest.mark.horovod
def test_a_killed_rank_ends_the_job_with_its_name(dataset, tmp_path):
    import psutil

    cmd = [str(os.path.join(os.path.dirname(sys.executable), "horovodrun")), "-np", "2",
           "-H", "localhost:2", "--gloo", sys.executable,
           *map(str, _args(dataset, tmp_path / "dies", "--epochs", "50"))]
    job = subprocess.Popen(cmd, env=worker_env(1), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    victim = None
    while victim is None:
        assert job.poll() is None and time.time() < deadline
        for child in psutil.Process(job.pid).children(recursive=True):
            try:
                if child.environ().get("HOROVOD_RANK") == "1" and "train.py" in " ".join(
                        child.cmdline()):
                    victim = child
            except psutil.Error:
                continue
        time.sleep(0.5)
    while not glob.glob(str(tmp_path / "dies" / "checkpoints" / "ckpt-*")):
        assert job.poll() is None and time.time() < deadline
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    output, _ = job.communicate(timeout=120)  # bounded: never a hang
    assert job.returncode != 0
    assert "Process 1 exit with status code" in output


@pytest.mark.slow
@pytest.mark.parametrize("precision, note", [
    ("mixed_float16", "mixed_float16: float32 weights and logits, dynamic loss scaling"),
    ("mixed_bfloat16", "mixed_bfloat16: float32 weights and logits"),
])
def test_mixed_precision_trains(dataset, tmp_path, precision, note):
    proc = _trained(_args(dataset, tmp_path / precision, "--epochs", "1",
                          "--steps-per-epoch", "2", "--precision", precision))
    assert note in proc.stdout
    # No GPU here: float16 is emulated on a CPU, and the user is told once.
    slow = "note: mixed_float16 on a CPU is about 150x slower than fp32"
    assert proc.stdout.count(slow) == (precision == "mixed_float16")
    record = _epochs(tmp_path / precision)[-1]
    assert np.isfinite(record["loss"]) and 0 <= record["val_mean_iou"] <= 1


@pytest.mark.slow
def test_staging_channels_and_bad_files(dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    bad_train = sorted((copy / "train").glob("data-*.h5"))[3]
    bad_train.write_bytes(bad_train.read_bytes()[:5000])  # truncated
    with h5py.File(sorted((copy / "val").glob("data-*.h5"))[0], "r+") as f:
        f["climate/labels_0"][0, 0] = 7  # not a class
    stage = tmp_path / "stage"
    proc = _trained([TRAIN, *TINY, "--data-train", copy / "train", "--data-val", copy / "val",
                     "--output-dir", tmp_path / "out", "--wandb-mode", "disabled",
                     "--epochs", "1", "--stage-dir", stage, "--skip-bad-files",
                     "--channels", "TMQ,U850,V850,PSL"])
    assert len(list((stage / "rank0").glob("data-*.h5"))) == 12  # all staged, then read
    assert "skipped 2 bad files" in proc.stdout
    assert bad_train.name in proc.stdout and "labels" in proc.stdout
    with open(tmp_path / "out" / "config.yaml") as f:
        assert yaml.safe_load(f)["input_shape"] == [64, 96, 4]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    # Tiramisu as the paper ran it: dropout 0.2 (the builder's default).
    ["--epochs", "3"],
    # 10 steps per epoch on 6 batches per pass: epochs and passes do not line up.
    ["--epochs", "3", "--steps-per-epoch", "10", "--model-option", "dropout=0"],
], ids=["dropout", "epoch-longer-than-a-pass"])
def test_resume_after_sigkill_is_bit_exact(dataset, tmp_path, extra):
    tiny = [a for a in TINY if a != "dropout=0"]
    tiny = [a for i, a in enumerate(tiny) if not (a == "--model-option" and i == len(tiny) - 1)]
    assert "dropout=0" not in tiny and len(tiny) == len(TINY) - 2

    def args(out):
        return [TRAIN, *tiny, "--data-train", dataset / "train", "--data-val",
                dataset / "val", "--output-dir", out, "--wandb-mode", "offline",
                "--augment", "--label-set", "random", *extra]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_python(args(whole))
    _kill_after(args(killed), killed / "checkpoints" / "ckpt-e0002-*", worker_env(2))
    resumed = run_python(args(killed))
    assert "resuming from" in resumed.stdout

    a, b = _final_weights(whole), _final_weights(killed)
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert _training_record(killed) == _training_record(whole)
    assert [e["epoch"] for e in _epochs(killed)] == [1, 2, 3]

    # W&B: the resumed run logs from the checkpoint's global step on, each epoch once.
    step = int(resumed.stdout.split("resuming from")[1].split("step ")[1].split(")")[0])
    runs = sorted(glob.glob(str(killed / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(runs) == 2
    _, history = run_contents(runs[-1])
    steps = [r["_step"] for r in history if "batch/loss" in r]
    assert steps == list(range(step + 1, steps[-1] + 1)) and steps[-1] == _steps_done(killed)
    epochs = [r["epoch/epoch"] for r in history if "epoch/epoch" in r]
    assert epochs == list(range(step // _steps_done(killed, per_epoch=True), 3))


def _steps_done(out, per_epoch=False):
    with open(os.path.join(out, "config.yaml")) as f:
        config = yaml.safe_load(f)
    return config["steps_per_epoch"] * (1 if per_epoch else config["epochs"])


@pytest.mark.slow
def test_wandb_key_without_network_falls_back_to_offline(dataset, tmp_path):
    out = tmp_path / "run"
    cmd = [TRAIN, *TINY, "--data-train", dataset / "train", "--output-dir", out, "--epochs",
           "1", "--steps-per-epoch", "2"]
    # A key that cannot be checked, and a server that refuses connections.
    proc = run_python(cmd, env_overrides={"WANDB_API_KEY": "0" * 40,
                                          "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert "W&B: cannot log online (127.0.0.1:9 " in proc.stdout
    assert f"Upload later with: wandb sync {out}/wandb/offline-run-*" in proc.stdout
    assert len(glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))) == 1
    assert len(_epochs(out)) == 1


@pytest.mark.parametrize("text, message", [
    ("lr: .inf", "lr: expected a finite number, got inf"),
    ("seed: -3", "seed: expected an integer >= 0, got -3"),
    ("model_option: blocks=[1,1,2]", None),  # one KEY=VALUE, not a list: still an option
])
def test_numbers_and_options_in_a_config_are_checked_as_flags(tmp_path, text, message, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text + "\n")
    if message is None:
        assert train.parse_args(["--config", str(config)]).model_options == {"blocks": [1, 1, 2]}
        return
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--config", str(config)])
    assert exit_info.value.code == 2
    assert f"--config {config}: {message}" in capsys.readouterr().err


def test_a_config_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"lr: 0.1  # caf\xe9\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(config)])
    assert f"--config {config}: not UTF-8 text (byte 14" in capsys.readouterr().err


@pytest.mark.parametrize("text, dest, value", [
    ("skip_bad_files: true", "skip_bad_files", True),
    ("periodic_padding: false", "periodic_padding", False),
    ("periodic-padding: true", "periodic_padding", True),
])
def test_yaml_booleans_are_booleans(tmp_path, text, dest, value):
    config = tmp_path / "run.yaml"
    config.write_text(text + "\n")
    assert getattr(train.parse_args(["--config", str(config)]), dest) is value


@pytest.mark.parametrize("text", ['skip_bad_files: "no"', 'periodic_padding: "false"',
                                  "augment: 1", "larc: yes please"])
def test_yaml_strings_for_on_off_flags_are_refused(tmp_path, text, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text + "\n")
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--config", str(config)])
    assert exit_info.value.code == 2
    key = text.split(":")[0]
    assert f"--config {config}: {key}: expected true or false, got" in capsys.readouterr().err


@pytest.mark.slow
def test_a_gradient_lag_the_run_cannot_apply_is_refused(dataset, tmp_path):
    cmd = [*TINY, "--data-train", dataset / "train", "--output-dir", tmp_path / "r",
           "--wandb-mode", "disabled", "--epochs", "2", "--steps-per-epoch", "3"]
    proc = _train([*cmd, "--gradient-lag", "6"])
    assert proc.returncode != 0
    assert ("--gradient-lag 6: the run has 6 steps (2 epochs x 3), so no lagged gradient would "
            "ever be applied") in proc.stderr
    assert not os.path.exists(tmp_path / "r" / "checkpoints")
    proc = _train([*cmd, "--gradient-lag", "2"])
    assert proc.returncode == 0
    assert "gradient lag 2: a buffer of 2 gradients, " in proc.stdout


@pytest.mark.slow
def test_an_init_checkpoint_that_fits_nothing_is_refused(dataset, tmp_path):
    source = _written_by(tmp_path / "other.h5",
                         "m = tf.keras.Sequential([tf.keras.Input((4,)), "
                         "tf.keras.layers.Dense(2, name='x')])\nm.save_weights(sys.argv[1])")
    proc = _train([*TINY, "--data-train", dataset / "train", "--output-dir",
                   tmp_path / "ft", "--wandb-mode", "disabled", "--epochs", "1",
                   "--init-checkpoint", source])
    assert proc.returncode != 0
    assert f"--init-checkpoint: no layer of {source} matches model" in proc.stderr


@pytest.mark.slow
@pytest.mark.horovod
def test_two_ranks_skip_a_file_deleted_mid_run_and_an_odd_grid_without_hanging(dataset,
                                                                              tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    # A smaller grid that sorts first: it must not decide the grid for the eight good ones.
    fields, labels = data.read_sample(str(sorted((copy / "train").glob("*.h5"))[0]))
    odd = copy / "train" / "a-small.h5"
    with h5py.File(odd, "w") as f:
        f["climate/data"] = fields[:32]
        f["climate/labels_0"] = labels[:32]
    doomed = sorted((copy / "val").glob("*.h5"))[1]  # validation file 1: rank 1's share
    out = tmp_path / "out"
    cmd = [str(os.path.join(os.path.dirname(sys.executable), "horovodrun")), "-np", "2",
           "-H", "localhost:2", "--gloo", sys.executable,
           *map(str, _args(copy, out, "--epochs", "3", "--skip-bad-files"))]
    job = subprocess.Popen(cmd, env=worker_env(1), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not glob.glob(str(out / "checkpoints" / "ckpt-e0001-*")):
        assert job.poll() is None and time.time() < deadline, "no checkpoint of epoch 1"
        time.sleep(0.1)
    doomed.unlink()
    try:
        output, _ = job.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after a validation file was deleted")
    assert job.returncode == 0, output[-3000:]
    assert "skipped 2 bad files" in output
    assert f"{odd}: grid is 32x96, but the other files' is 64x96 (12 of 13 files)" in output
    assert str(doomed) in output  # skipped on rank 1, reported by rank 0
    with open(out / "config.yaml") as f:
        assert yaml.safe_load(f)["input_shape"] == [64, 96, 16]
    assert [e["epoch"] for e in _epochs(out)] == [1, 2, 3]


@pytest.mark.slow
def test_a_checkpoint_moved_elsewhere_predicts_the_same(dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    out = tmp_path / "run"
    _trained(_args(copy, out, "--epochs", "1"))
    best = out / "checkpoints" / "best"
    assert (best / "stats.h5").read_bytes() == (copy / "train" / "stats.h5").read_bytes()
    with open(best / "meta.json") as f:
        meta = json.load(f)
    assert meta["stats"] == "stats.h5" and meta["channel_names"][:2] == ["TMQ", "U850"]
    here = tmp_path / "pred-here"
    check_main(predict_main, ["--checkpoint", best, "--input", copy / "val",
                              "--output-dir", here, "--no-maps"])
    moved = tmp_path / "elsewhere" / "best"
    shutil.move(best, moved)
    shutil.rmtree(copy / "train")  # the stats.h5 the run was trained with is gone too
    there = tmp_path / "pred-there"
    check_main(predict_main, ["--checkpoint", moved, "--input", copy / "val",
                              "--output-dir", there, "--no-maps"])
    names = sorted(os.listdir(here))
    assert names == sorted(os.listdir(there)) and len(names) == 5
    for name in names:
        np.testing.assert_array_equal(read_masks(here / name), read_masks(there / name))


@pytest.mark.slow
def test_a_tf_checkpoint_of_something_else_is_refused_as_a_backbone(dataset, tmp_path):
    prefix = _written_by(tmp_path / "other" / "ckpt",
                         "tf.train.Checkpoint(x=tf.Variable([1.0, 2.0])).write(sys.argv[1])")
    proc = _train(["--model", "deeplabv3plus_tfm", "--output-stride", "16",
                   "--data-train", dataset / "train", "--output-dir", tmp_path / "ft",
                   "--wandb-mode", "disabled", "--epochs", "1", "--init-checkpoint", prefix])
    assert proc.returncode != 0
    assert f"--init-checkpoint: cannot restore a backbone from {prefix}" in proc.stderr
    assert not os.path.exists(tmp_path / "ft" / "checkpoints")


@pytest.mark.slow
def test_fine_tuning_copies_the_filters_of_channels_both_runs_use(dataset, tmp_path):
    source = tmp_path / "source"
    _trained(_args(dataset, source, "--epochs", "1", "--steps-per-epoch", "2", "--channels",
                   "TMQ,U850,V850,PSL"))
    best = source / "checkpoints" / "best"
    proc = _trained(_args(dataset, tmp_path / "ft", "--epochs", "1", "--steps-per-epoch", "1",
                            "--lr", "1e-12", "--channels", "U850,PSL,TS", "--init-checkpoint",
                            best))
    assert "stem_conv: 2 input channel(s) copied by name, 1 new (TS)" in proc.stdout
    with h5py.File(best / "model-weights.h5") as f:
        old = f["stem_conv/stem_conv/kernel:0"][...]
    new = _final_weights(tmp_path / "ft")["stem_conv/stem_conv/kernel:0"]
    # lr 1e-12 leaves them as loaded (to float32 precision): U850 and PSL copied.
    np.testing.assert_allclose(new[:, :, :2], old[:, :, [1, 3]], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new[:, :, 2], old[:, :, [0, 2]].sum(axis=2), rtol=1e-5, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("damage, problem", [
    ("nan", "data contain 1 NaN/Inf values (channels UBOT)"),
    ("label", "outside the class range"),
    ("empty", "cannot be opened"),
])
def test_a_bad_training_file_is_one_line_naming_it(dataset, tmp_path, damage, problem, capfd):
    copy = tmp_path / "data"
    shutil.copytree(dataset / "train", copy)
    bad = sorted(copy.glob("data-*.h5"))[5]
    if damage == "empty":
        bad.write_bytes(b"")
    else:
        with h5py.File(bad, "r+") as f:
            if damage == "nan":
                f["climate/data"][0, 0, 3] = np.nan
            else:
                f["climate/labels_0"][3, 4] = 3
    args = [*TINY, "--data-train", copy, "--output-dir", tmp_path / "out", "--wandb-mode",
            "disabled", "--epochs", "1"]
    if damage == "empty":  # one in a process of its own, TensorFlow's log lines on
        proc = run_python([TRAIN, *args], check=False,
                          env_overrides={"TF_CPP_MIN_LOG_LEVEL": None})
    else:
        proc = _train(args, capfd)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and f"{bad}: " in last and problem in last


@pytest.mark.slow
def test_class_weights_from_statistics_without_cyclones_are_explained(dataset, tmp_path):
    copy = tmp_path / "train"
    shutil.copytree(dataset / "train", copy)
    with h5py.File(copy / "stats.h5", "r+") as f:  # a data set without cyclone pixels
        del f["climate/labels_stats"]
        f["climate/labels_stats"] = np.array([100, 0, 5])
    proc = _train([*TINY, "--data-train", copy, "--output-dir", tmp_path / "out",
                   "--wandb-mode", "disabled", "--epochs", "1"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (f"train.py: error: --class-weights sc18: the weights come from the class counts "
            f"in {copy / 'stats.h5'}, which do not allow them") in proc.stderr
    assert "give --class-weights none or three numbers" in proc.stderr
    assert _train([*TINY, "--data-train", copy, "--output-dir", tmp_path / "none",
                   "--wandb-mode", "disabled", "--epochs", "1", "--steps-per-epoch", "1",
                   "--class-weights", "none"]).returncode == 0


@pytest.mark.slow
def test_training_on_model_output_equals_training_on_its_samples(tmp_path):
    """Multi-time-step netCDF files (netCDF4 and netCDF3, any dimension order, four of the
    variables) train exactly as the same time steps written one HDF5 sample each."""
    from model_output_files import synthetic_steps, write_model_output

    fields, labels = synthetic_steps(12, 32, 48, seed=21)
    samples, output = tmp_path / "samples", tmp_path / "output"
    for split, steps in (("train", range(8)), ("val", range(8, 12))):
        (samples / split).mkdir(parents=True)
        (output / split).mkdir(parents=True)
        for t in steps:  # DeepCAM layout, in the time steps' order
            with h5py.File(samples / split / f"s-{t:02d}.h5", "w") as f:
                f["climate/data"] = fields[t]
                f["climate/labels_0"] = labels[t]
    four = ["TMQ", "U850", "V850", "PSL"]
    write_model_output(output / "train" / "a.nc", fields[:5], labels[:5], channels=four)
    write_model_output(output / "train" / "b.nc", fields[5:8], labels[5:8], channels=four,
                       file_format="NETCDF3_64BIT", descending=True)
    write_model_output(output / "val" / "v.nc", fields[8:], labels[8:], channels=four,
                       order=("time", "lon", "lat"), lon180=True)
    data.write_stats(tmp_path / "stats.h5", data.compute_stats(samples / "train"))

    def train(root, out):
        return _trained([TRAIN, *TINY, "--data-train", root / "train", "--data-val",
                         root / "val", "--output-dir", out, "--wandb-mode", "disabled",
                         "--stats", tmp_path / "stats.h5", "--channels", ",".join(four),
                         "--batch-size", "2", "--epochs", "2"])

    proc = train(output, tmp_path / "from-output")
    assert "4 steps per epoch" in proc.stdout
    train(samples, tmp_path / "from-samples")
    a, b = _final_weights(tmp_path / "from-output"), _final_weights(tmp_path / "from-samples")
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert _training_record(tmp_path / "from-output") == \
        _training_record(tmp_path / "from-samples")
    assert [e["epoch"] for e in _epochs(tmp_path / "from-output")] == [1, 2]
    assert "val_mean_iou" in _epochs(tmp_path / "from-output")[-1]


@pytest.mark.slow
@pytest.mark.horovod
def test_mpirun_trains_the_weights_of_horovodrun_gloo(dataset, tmp_path):
    """Horovod is built with MPI too: `mpirun -np 2` (OpenMPI) runs the same job as
    `horovodrun --gloo`, to the same weights."""
    gloo, mpi = tmp_path / "gloo", tmp_path / "mpi"
    proc = run_horovod(_args(dataset, gloo, "--epochs", "1", "--batch-size", "2"))
    assert "2 rank(s) over Gloo x batch 2" in proc.stdout
    proc = run_mpirun(_args(dataset, mpi, "--epochs", "1", "--batch-size", "2"))
    assert "2 rank(s) over MPI x batch 2" in proc.stdout
    a, b = _final_weights(gloo), _final_weights(mpi)
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:  # two ranks' sums are the same whichever library adds them
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert _training_record(mpi) == _training_record(gloo)


def _run_in_process(argv):
    """train.main on `argv` (as _args gives it, without the script) in this process."""
    status = train.main([str(a) for a in argv[1:]])
    assert status == 0


@pytest.mark.slow
def test_accumulating_two_batches_of_one_equals_batches_of_two_and_resumes(dataset, tmp_path,
                                                                          capsys):
    """--accumulate 2 --batch-size 1 trains the weights of --batch-size 2 (TINY has no batch
    norm, whose statistics would differ), with LARC and a schedule in updates; a resume from
    a mid-epoch checkpoint ends where the uninterrupted run did."""
    common = ["--epochs", "2", "--optimizer", "sgd", "--larc", "--lr", "0.05", "--lr-unit",
              "step", "--warmup", "2", "--lr-stages", "4:0.5"]
    acc, whole, mid = tmp_path / "acc", tmp_path / "whole", tmp_path / "mid"
    _run_in_process(_args(dataset, acc, *common, "--batch-size", "1", "--accumulate", "2",
                          "--checkpoint-every-steps", "4", "--keep-checkpoints", "10"))
    out = capsys.readouterr().out
    assert ("accumulating 2 batches per update: a global batch of 2 samples, 6 updates per "
            "epoch") in out and "12 steps per epoch" in out
    _run_in_process(_args(dataset, whole, *common, "--batch-size", "2"))
    a, b = _final_weights(acc), _final_weights(whole)
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # The schedule counts updates: x0.5 from update 4, in epoch 1 (6 updates per epoch).
    assert [e["learning_rate"] for e in _epochs(acc)] == [e["learning_rate"]
                                                          for e in _epochs(whole)]
    assert [e["learning_rate"] for e in _epochs(acc)] == pytest.approx([0.025, 0.025])
    with open(acc / "config.yaml") as f:
        assert yaml.safe_load(f)["global_batch_size"] == 2

    # Checkpoints fall between updates: resumed mid-epoch 2 (batch 16 of 24), the same end.
    shutil.copytree(acc, mid)
    for name in os.listdir(mid / "checkpoints"):
        if name != "best" and int(name.split("-s")[1]) > 16:
            shutil.rmtree(mid / "checkpoints" / name)
    _run_in_process(_args(dataset, mid, *common, "--batch-size", "1", "--accumulate", "2"))
    assert "ckpt-e0001-s00000016 (epoch 1, step 16)" in capsys.readouterr().out
    for name, value in a.items():
        np.testing.assert_array_equal(_final_weights(mid)[name], value, err_msg=name)


def test_an_epoch_of_partial_updates_is_refused(dataset, tmp_path, capsys):
    status = train.main([str(a) for a in _args(dataset, tmp_path / "r", "--batch-size", "1",
                                               "--accumulate", "5")[1:]])
    assert status == 2
    assert ("train.py: error: --accumulate 5: an epoch of 12 batches is not a whole number of "
            "updates; give --steps-per-epoch as a multiple of 5") in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.horovod
def test_sync_bn_on_two_ranks_equals_one_rank_with_the_global_batch(dataset, tmp_path, capsys):
    """Batch norm with --sync-bn on 2 ranks x batch 2 keeps the moving statistics (and trains
    the weights) of 1 rank x batch 4; without it, each rank normalises its own 2 samples."""
    def args(out, *extra):
        return [TRAIN, *TINY, "--model-option", "batch_norm=true", "--data-train",
                dataset / "train", "--output-dir", out, "--wandb-mode", "disabled",
                "--epochs", "1", "--steps-per-epoch", "3", "--optimizer", "sgd", "--lr", "0.05",
                *extra]

    one, synced, local = tmp_path / "one", tmp_path / "synced", tmp_path / "local"
    _run_in_process(args(one, "--batch-size", "4", "--sync-bn"))
    assert ("--sync-bn: 9 batch-norm layers normalise with the statistics of the global "
            "batch (1 rank(s) x batch 4)") in capsys.readouterr().out
    proc = run_horovod(args(synced, "--batch-size", "2", "--sync-bn"))
    assert "of the global batch (2 rank(s) x batch 2)" in proc.stdout
    run_horovod(args(local, "--batch-size", "2"))

    reference, a, b = _final_weights(one), _final_weights(synced), _final_weights(local)
    moving = [k for k in reference if "moving_" in k]
    assert len(moving) == 18 and reference.keys() == a.keys() == b.keys()
    # 3 steps at momentum 0.99 move the statistics by about 1e-3: compare at 1e-6 (seen:
    # 1.2e-7; the ranks' moments come from E[x^2] - E[x]^2, one rank's from the samples).
    for name in moving:
        np.testing.assert_allclose(a[name], reference[name], rtol=0, atol=1e-6, err_msg=name)
    assert max(np.abs(b[k] - reference[k]).max() for k in moving) > 1e-4
    for name in reference:
        np.testing.assert_allclose(a[name], reference[name], rtol=1e-3, atol=1e-5,
                                   err_msg=name)


def test_sync_bn_without_batch_norm_is_refused(dataset, tmp_path, capsys):
    status = train.main([str(a) for a in _args(dataset, tmp_path / "r", "--sync-bn")[1:]])
    assert status == 2
    assert ("train.py: error: --sync-bn: model tiramisu has no batch normalization layer "
            "(tiramisu has it with --model-option batch_norm=true)") in capsys.readouterr().err


def test_validation_epochs_are_every_nth_and_the_last():
    assert train.validation_epochs(1, 3) == [1, 2, 3]
    assert train.validation_epochs(2, 5) == [2, 4, 5]
    assert train.validation_epochs(4, 3) == [3]


@pytest.mark.slow
def test_validate_every_and_target_iou(dataset, tmp_path, capsys):
    short = ["--steps-per-epoch", "2"]
    every = tmp_path / "every"
    # In a process of its own: the W&B service has written the whole run file once it exits
    # (in this process, run.finish() was seen to return before the last epoch's record).
    proc = run_python(_args(dataset, every, *short, "--epochs", "3", "--validate-every", "2",
                            "--target-iou", "1", "--wandb-mode", "offline",
                            "--wandb-log-every", "4"))
    assert "reached" not in proc.stdout  # a target of 1 is not met: 3 epochs
    assert [("val_mean_iou" in e, "val_loss" in e) for e in _epochs(every)] == [
        (False, False), (True, True), (True, True)]
    _, history = run_contents(glob.glob(str(every / "wandb" / "*run-*" / "run-*.wandb"))[0])
    assert [r["epoch/epoch"] for r in history if "epoch/val_mean_iou" in r] == [1, 2]
    assert sum("validation/samples/all_masks" in r for r in history) == 2
    assert [r["epoch/epoch"] for r in history if "epoch/loss" in r] == [0, 1, 2]
    # Batch metrics every 4th global step only (each log reads them from the device).
    assert [r["_step"] for r in history if "batch/loss" in r] == [4]

    # Reached at the first validation (epoch 2 of 4): stopped there, its checkpoint written
    # although --checkpoint-every 3 would not have written it.
    target = tmp_path / "target"
    _run_in_process(_args(dataset, target, *short, "--epochs", "4", "--validate-every", "2",
                          "--target-iou", "0.01", "--checkpoint-every", "3"))
    out = capsys.readouterr().out
    iou = _epochs(target)[-1]["val_mean_iou"]
    assert f"climseg: val_mean_iou {iou:.4f} reached the target 0.01 at epoch 2: stopping" in out
    kept = target / "checkpoints" / "ckpt-e0002-s00000004"
    assert (f"climseg: reached --target-iou 0.01: validation mean IoU {iou:.4f} at epoch 2 of "
            f"4; stopped there, its checkpoint {kept} kept") in out
    assert [e["epoch"] for e in _epochs(target)] == [1, 2]
    assert sorted(os.listdir(target / "checkpoints")) == ["best", kept.name]


def test_target_iou_without_validation_files_is_refused(dataset, tmp_path, capsys):
    status = train.main([*map(str, TINY), "--data-train", str(dataset / "train"),
                         "--output-dir", str(tmp_path / "r"), "--target-iou", "0.5"])
    assert status == 2
    assert ("train.py: error: --target-iou 0.5 needs validation files (--data-val): the target "
            "is a validation mean IoU") in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.horovod
def test_two_ranks_accumulating_equal_one_rank_with_the_global_batch(dataset, tmp_path):
    """2 ranks x batch 1 x --accumulate 2 (each rank sums its 2 micro-batches, one allreduce
    per update) train the weights of 1 rank x batch 4."""
    def args(out, *extra):
        return [TRAIN, *TINY, "--data-train", dataset / "train", "--output-dir", out,
                "--wandb-mode", "disabled", "--epochs", "1", "--optimizer", "sgd", "--lr",
                "0.05", "--larc", *extra]

    proc = run_horovod(args(tmp_path / "two", "--batch-size", "1", "--accumulate", "2"))
    assert ("accumulating 2 batches per update: a global batch of 4 samples, 3 updates per "
            "epoch") in proc.stdout
    _run_in_process(args(tmp_path / "one", "--batch-size", "4"))
    a, b = _final_weights(tmp_path / "two"), _final_weights(tmp_path / "one")
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:  # seen: 1.5e-8
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_jit_compile_trains_the_weights_of_the_plain_run(dataset, tmp_path):
    """--jit-compile: the model's forward and backward as one XLA computation, with
    Horovod's DistributedOptimizer around it (its allreduce has no XLA kernel), trains
    what the plain run trains, to XLA's float reordering."""
    import tensorflow as tf

    import callbacks

    runs = {}
    for name, extra in (("plain", []), ("xla", ["--jit-compile"])):
        out = tmp_path / name
        proc = run_main(train.main, [*TINY, "--data-train", dataset / "train", "--output-dir",
                                     out, "--epochs", "2", "--batch-size", "2",
                                     "--wandb-mode", "disabled", "--seed", "3", *extra])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("the model's forward and backward pass compiled with XLA" in proc.stdout) \
            == bool(extra)
        with h5py.File(glob.glob(str(out / "checkpoints" / "ckpt-e0002-*" /
                                     callbacks.checkpoint.WEIGHTS))[0]) as f:
            runs[name] = {k: np.asarray(v) for k, v in _datasets(f).items()}
    assert runs["plain"].keys() == runs["xla"].keys() and runs["plain"]
    for key, value in runs["plain"].items():
        np.testing.assert_allclose(runs["xla"][key], value, rtol=1e-3, atol=1e-5, err_msg=key)
    # The compiled call is XLA's: it lowers to HLO (a plain tf.function would not say so).
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 2)), tf.keras.layers.Conv2D(3, 3)])
    callbacks.compile_with_xla(model)
    hlo = model.call.experimental_get_compiler_ir(tf.ones((1, 8, 8, 2)), training=False,
                                                  mask=None)(
        stage="hlo")
    assert "convolution" in hlo


def _datasets(group):
    """Every dataset of an HDF5 group, by path."""
    found = {}
    group.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def test_an_unknown_kernel_set_in_a_model_option_is_one_line(dataset, tmp_path):
    proc = run_main(train.main, [*_args(dataset, tmp_path / "run")[1:], "--model",
                                 "deeplabv3plus", "--model-option", "kernels=fast"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.py: error: --model-option kernels: kernels must be one of 'reference', 'cpu' "
        "or None (chosen by device); received 'fast'.")
