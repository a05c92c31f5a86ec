"""Damaged checkpoints and run records, unfinished writes and full disks: one line each.

The checkpoints are those of a real short training run, damaged as a crash,
a full disk or a careless hand would damage them (truncated, emptied, a key
removed); the full disks are real (a small tmpfs, see conftest.small_disk).
"""

import json
import os
import shutil
import subprocess

import pytest
from conftest import check_main, fill_disk, run_main

import data
import train
from callbacks.checkpoint import (
    CheckpointError,
    list_checkpoints,
    remove_unfinished_writes,
    resume_point,
    verify_checkpoint,
)

TINY = ["--model", "tiramisu", "--model-option", "blocks=[1,1,2]",
        "--model-option", "growth_rate=4", "--model-option", "initial_filters=8",
        "--model-option", "kernel_size=3", "--model-option", "dropout=0"]
NEWEST, OLDER = "ckpt-e0002-s00000002", "ckpt-e0001-s00000001"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data.generate(root / "train", 4, 64, 96, seed=1)
    data.generate(root / "val", 2, 64, 96, seed=2)
    return root


def _args(dataset, out, epochs, *extra):
    """train.py's arguments; train.main runs them in this process (conftest.run_main)."""
    return [*TINY, "--data-train", dataset / "train", "--data-val", dataset / "val",
            "--output-dir", out, "--wandb-mode", "disabled", "--steps-per-epoch", "1",
            "--epochs", str(epochs), *extra]


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """A real two-epoch run: checkpoints of epochs 1 and 2, best, metrics.json, curves.png."""
    out = tmp_path_factory.mktemp("run") / "run"
    check_main(train.main, _args(dataset, out, 2))
    assert sorted(os.listdir(out / "checkpoints")) == ["best", OLDER, NEWEST]
    return out


def _copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size if size >= 0 else os.path.getsize(path) // 2)


def _drop_key(path, key):
    meta = json.loads(path.read_text())
    del meta[key]
    path.write_text(json.dumps(meta))


STATE_DATA = "state.data-00000-of-00001"
# (damage done to the newest checkpoint, what the line about it says)
DAMAGES = {
    "state truncated": (lambda c: _truncate(c / STATE_DATA, -1),
                        "cannot read checkpoint state {c}/state: Read less bytes than "
                        "requested (a truncated or damaged file)"),
    "state empty": (lambda c: _truncate(c / STATE_DATA, 0),
                    "cannot read checkpoint state {c}/state: Read less bytes than requested"),
    "state index empty": (lambda c: _truncate(c / "state.index", 0),
                          "cannot read checkpoint state {c}/state: file is too short to be "
                          "an sstable"),
    "weights truncated": (lambda c: _truncate(c / "model-weights.h5", 1000),
                          "cannot read checkpoint weights {c}/model-weights.h5: Unable to "
                          "synchronously open file (truncated file: eof = 1000"),
    "meta without step": (lambda c: _drop_key(c / "meta.json", "step"),
                          "checkpoint metadata {c}/meta.json: 'step' should be an integer "
                          ">= 0, found no such key"),
    "meta truncated": (lambda c: _truncate(c / "meta.json", 20),
                       "cannot read checkpoint metadata {c}/meta.json: "),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_skipped_with_one_line(finished_run, tmp_path, damage):
    out = _copy(finished_run, tmp_path)
    newest = out / "checkpoints" / NEWEST
    harm, text = DAMAGES[damage]
    harm(newest)
    with pytest.raises(CheckpointError) as error:
        verify_checkpoint(str(newest))
    assert text.format(c=newest) in str(error.value) and "\n" not in str(error.value)
    said = []
    assert resume_point(str(out / "checkpoints"), say=said.append) == \
        str(out / "checkpoints" / OLDER)
    assert said == [f"skipping damaged checkpoint {NEWEST}: {error.value}"]
    # --resume PATH names it; no fallback from a checkpoint the user chose.
    with pytest.raises(CheckpointError, match=f"^--resume {newest}: "):
        resume_point(str(out / "checkpoints"), str(newest))
    assert verify_checkpoint(str(out / "checkpoints" / OLDER))["step"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["state truncated", "meta without step"])
def test_train_resumes_from_the_newest_checkpoint_that_verifies(dataset, finished_run,
                                                                tmp_path, damage, capfd):
    out = _copy(finished_run, tmp_path)
    newest = out / "checkpoints" / NEWEST
    DAMAGES[damage][0](newest)
    proc = run_main(train.main, _args(dataset, out, 3), capfd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    skipped = [line for line in lines if "skipping damaged checkpoint" in line]
    assert len(skipped) == 1 and skipped[0].startswith(f"climseg: skipping damaged checkpoint "
                                                       f"{NEWEST}: ")
    assert DAMAGES[damage][1].format(c=newest) in skipped[0]
    assert f"climseg: resuming from {out / 'checkpoints' / OLDER} (epoch 1, step 1)" in lines
    assert "Traceback" not in proc.stderr
    # Epoch 2 was trained again (its damaged checkpoint replaced), then epoch 3.
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == \
        [1, 2, 3]
    verify_checkpoint(str(newest))
    assert os.path.basename(list_checkpoints(str(out / "checkpoints"))[-1]) == \
        "ckpt-e0003-s00000003"


@pytest.mark.slow
def test_no_checkpoint_that_verifies_stops_with_one_line(dataset, finished_run, tmp_path,
                                                         capfd):
    out = _copy(finished_run, tmp_path)
    for name in (OLDER, NEWEST):
        _truncate(out / "checkpoints" / name / STATE_DATA, 0)
    proc = run_main(train.main, _args(dataset, out, 3), capfd)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train.py: error: none of the 2 checkpoint(s) in {out / 'checkpoints'} can be resumed "
        f"from (newest: cannot read checkpoint state {out / 'checkpoints' / NEWEST}/state: Read "
        "less bytes than requested (a truncated or damaged file)); move them elsewhere to start "
        "afresh, or give --resume PATH or another --output-dir")
    # Nothing was removed or rewritten.
    assert sorted(os.listdir(out / "checkpoints")) == ["best", OLDER, NEWEST]
    assert (out / "metrics.json").read_bytes() == (finished_run / "metrics.json").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("record", ["best/meta.json", "metrics.json"])
def test_a_corrupt_record_does_not_block_resuming(dataset, finished_run, tmp_path, record,
                                                  capfd):
    out = _copy(finished_run, tmp_path)
    path = out / ("checkpoints/" if record.startswith("best") else "") / record
    _truncate(path, 30)
    damaged = path.read_bytes()
    proc = run_main(train.main, _args(dataset, out, 3), capfd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"climseg: resuming from {out / 'checkpoints' / NEWEST} (epoch 2, step 2)" \
        in proc.stdout.splitlines()
    notes = [line for line in proc.stdout.splitlines() if line.startswith("climseg: note: ")]
    if record == "metrics.json":
        assert notes == [f"climseg: note: cannot read {path}: not valid JSON (Expecting value: "
                         "line 3 column 15 (char 27)); kept it as "
                         f"{path}.unreadable, and a new record begins"]
        assert (out / "metrics.json.unreadable").read_bytes() == damaged  # kept, not lost
        assert [e["epoch"] for e in json.loads(path.read_text())["epochs"]] == [3]
    else:
        assert len(notes) == 1 and notes[0].startswith(
            f"climseg: note: cannot read checkpoint metadata {path}: ")
        assert notes[0].endswith("; the next checkpoint becomes the best")
        assert verify_checkpoint(str(out / "checkpoints" / "best"))["epoch"] == 3


def _dead_pid():
    """The id of a real process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_unfinished_writes_of_killed_runs_are_removed_and_nothing_else(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    ckpts = out / "checkpoints"
    dead = _dead_pid()
    # What a SIGKILL leaves mid-write: a partial checkpoint and a best caught between renames.
    shutil.copytree(ckpts / NEWEST, ckpts / f"ckpt-e0003-s00000003.tmp-{dead}")
    (ckpts / "best").rename(ckpts / f"best.old-{dead}")
    shutil.copytree(ckpts / NEWEST, ckpts / f"best.tmp-{dead}")
    keep = [f"ckpt-e0004-s00000004.tmp-{os.getpid()}",  # a running writer's
            "notes.tmp-1", "best.tmp-x", f"ckpt-e0005.tmp-{dead}", "my-best.old-12"]
    for name in keep:
        (ckpts / name).mkdir()
    assert remove_unfinished_writes(str(ckpts)) == [f"best.old-{dead}",
                                                    f"ckpt-e0003-s00000003.tmp-{dead}"]
    assert sorted(os.listdir(ckpts)) == sorted(["best", OLDER, NEWEST, *keep])
    # The complete new copy became the best.
    assert verify_checkpoint(str(ckpts / "best"))["epoch"] == 2
    assert remove_unfinished_writes(str(ckpts)) == []


@pytest.mark.slow
def test_train_removes_unfinished_writes_on_start(dataset, finished_run, tmp_path, capfd):
    out = _copy(finished_run, tmp_path)
    dead = _dead_pid()
    shutil.copytree(out / "checkpoints" / NEWEST,
                    out / "checkpoints" / f"ckpt-e0003-s00000003.tmp-{dead}")
    (out / "checkpoints" / "notes.tmp-1").write_text("mine")
    proc = run_main(train.main, _args(dataset, out, 2), capfd)
    assert proc.returncode == 0, proc.stderr
    assert (f"climseg: removed 1 unfinished checkpoint write(s) of a killed run from "
            f"{out / 'checkpoints'}: ckpt-e0003-s00000003.tmp-{dead}") in proc.stdout
    assert sorted(os.listdir(out / "checkpoints")) == ["best", OLDER, NEWEST, "notes.tmp-1"]


# --------------------------------------------------------------------------- full disks


@pytest.mark.slow
def test_a_full_disk_while_writing_the_curves_is_one_line(dataset, finished_run, small_disk,
                                                          capfd):
    out = small_disk / "run"
    shutil.copytree(finished_run, out)
    curves = (out / "curves.png").read_bytes()
    fill_disk(small_disk, 16 << 10)  # metrics.json fits, curves.png (about 66 kB) does not
    proc = run_main(train.main, _args(dataset, out, 3), capfd)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train.py: error: could not write {out / 'curves.png'}: No space left on device; an "
        f"earlier version of it is left intact. Checkpoints in {out / 'checkpoints'} are "
        "intact: the same command resumes from the last one.")
    assert (out / "curves.png").read_bytes() == curves
    assert not list(out.glob("*.tmp*"))
    assert sorted(os.listdir(out / "checkpoints")) == ["best", OLDER, NEWEST]


@pytest.fixture
def no_inodes_left(tmp_path):
    """A real tmpfs with space but no free inode: creating anything there fails with ENOSPC."""
    mount_point = tmp_path / "no_inodes"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,nr_inodes=2", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        (mount_point / "a").write_text("")  # the root and this: no inode left
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("where, message", [
    ("full", "{stage}: not enough space to stage 5 files: they need 1.8 MB, 0 bytes is free"),
    ("no inodes", "{stage}: cannot create the staging directory: No space left on device"),
    ("under a file", "{stage}: cannot create the staging directory: Not a directory"),
])
def test_staging_where_it_cannot_write_is_one_line(dataset, request, tmp_path, capsys, where,
                                                   message):
    from data.staging import main

    if where == "full":
        disk = request.getfixturevalue("small_disk")
        fill_disk(disk, 0)
        stage = disk / "stage"
    elif where == "no inodes":
        stage = request.getfixturevalue("no_inodes_left") / "stage"
    else:
        (tmp_path / "file").write_text("")
        stage = tmp_path / "file" / "stage"
    assert main([str(dataset / "train"), "--to", str(stage), "-q"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "climseg-stage: error: " + message.format(stage=stage)]
    assert not stage.exists() or os.listdir(stage) == []  # no partial copy left


@pytest.mark.slow
def test_train_staging_to_a_full_disk_is_one_line(dataset, small_disk, capfd):
    fill_disk(small_disk, 0)
    stage = small_disk / "stage"
    proc = run_main(train.main, [*TINY, "--data-train", dataset / "train", "--stage-dir", stage,
                                 "--output-dir", small_disk.parent / "out", "--wandb-mode",
                                 "disabled"], capfd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train.py: error: --stage-dir {stage}: {stage / 'rank0'}: not enough space to stage "
        "4 files: they need 1.8 MB, 0 bytes is free")
