"""How every command ends on an error: one line, status 2 for bad usage and 1 for a failed run,
the traceback only with --debug or CLIMSEG_DEBUG=1, and the failing rank named under Horovod."""

import os
import subprocess

import pytest
from conftest import BIN_DIR, TESTS_DIR, run_horovod, run_main, run_python, worker_env

import data
from data import errors

TRAIN = str(TESTS_DIR.parent / "train.py")
TINY = ["--model", "tiramisu", "--model-option", "blocks=[1,1]", "--model-option",
        "growth_rate=4", "--model-option", "initial_filters=8", "--model-option",
        "kernel_size=3", "--model-option", "dropout=0", "--wandb-mode", "disabled"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    data.generate(root / "train", 4, 32, 48, seed=1)
    (root / "file").write_text("not a directory")
    return root


# (command, its arguments, exit status, the line). {d}: the data set's directory.
CASES = {
    "stats: no such input": (
        "climseg-stats", ["{d}/nope", "-q", "-o", "{d}/s.h5"], 2,
        "climseg-stats: error: {d}/nope: no such file or directory"),
    "stats: output not writable": (
        "climseg-stats", ["{d}/train", "-q", "-o", "{d}/file/stats.h5"], 1,
        "climseg-stats: error: --output {d}/file/stats.h5: cannot write the statistics there: "
        "Not a directory"),
    "stage: bad oversample": (
        "climseg-stage", ["{d}/train", "--to", "{d}/st", "--oversample", "2", "-q"], 2,
        "climseg-stage: error: oversample=2.0; expected 1 <= oversample <= num_shards (1)"),
    "stage: cannot create the directory": (
        "climseg-stage", ["{d}/train", "--to", "{d}/file/st", "-q"], 1,
        "climseg-stage: error: {d}/file/st: cannot create the staging directory: Not a "
        "directory"),
    "train: no such data": (
        "train.py", ["--data-train", "{d}/nope", "--output-dir", "{d}/out"], 2,
        "train.py: error: --data-train: {d}/nope: no such file or directory"),
    "train: staging fails": (
        "train.py", ["--data-train", "{d}/train", "--stage-dir", "{d}/file/st", "--output-dir",
                     "{d}/out"], 1,
        "train.py: error: --stage-dir {d}/file/st: {d}/file/st/rank0: cannot create the "
        "staging directory: Not a directory"),
}


def _main(command):
    """The command's `main(argv)`, as its console script (or `python train.py`) calls it."""
    if command == "train.py":
        import train

        return lambda argv: train.main([*TINY, *argv])
    from data import staging, stats

    return {"climseg-stats": stats.main, "climseg-stage": staging.main}[command]


def _check(proc, dataset, status, line, debug):
    assert proc.returncode == status
    assert proc.stderr.strip().splitlines()[-1] == line.format(d=dataset)
    if debug:  # the traceback first, with the cause of the error
        assert "Traceback (most recent call last):" in proc.stderr
        assert "data.errors.CommandError: " in proc.stderr
    else:
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not os.path.exists(dataset / "out" / "checkpoints")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("debug", ["", "--debug", "CLIMSEG_DEBUG=1"])
def test_an_error_is_one_line_with_the_status_of_its_kind(dataset, case, debug, capfd,
                                                          monkeypatch):
    # In this process, through the command's main (what its console script runs); the
    # processes below show that a real one prints the same.
    command, argv, status, line = CASES[case]
    argv = [a.format(d=dataset) for a in argv] + (["--debug"] if debug == "--debug" else [])
    if debug.startswith("CLIMSEG_DEBUG"):
        monkeypatch.setenv("CLIMSEG_DEBUG", "1")
    else:
        monkeypatch.delenv("CLIMSEG_DEBUG", raising=False)
    _check(run_main(_main(command), argv, capfd), dataset, status, line, debug)


# One case per command in a process of its own, as a user starts it: the installed
# console script, or `python train.py`; once plain, once with --debug.
PROCESS_CASES = {"climseg-stats": "stats: output not writable",
                 "climseg-stage": "stage: bad oversample",
                 "train.py": "train: staging fails"}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(PROCESS_CASES))
@pytest.mark.parametrize("debug", ["", "--debug"])
def test_a_command_started_as_a_process_prints_the_same_line(dataset, command, debug):
    _, argv, status, line = CASES[PROCESS_CASES[command]]
    argv = [a.format(d=dataset) for a in argv] + ([debug] if debug else [])
    if command == "train.py":
        proc = run_python([TRAIN, *TINY, *argv], check=False,
                          env_overrides={"CLIMSEG_DEBUG": None})
    else:
        proc = subprocess.run([str(BIN_DIR / command), *argv], capture_output=True, text=True,
                              env=worker_env(2, {"CLIMSEG_DEBUG": None}), timeout=600)
    _check(proc, dataset, status, line, debug)


def test_an_unexpected_error_is_one_line_that_points_to_debug(capsys, monkeypatch):
    def broken(argv):
        return {}["missing"]

    monkeypatch.delenv("CLIMSEG_DEBUG", raising=False)
    assert errors.run_command("climseg-x", broken, ["a"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "climseg-x: error: KeyError: 'missing' (unexpected: run again with --debug or "
        "CLIMSEG_DEBUG=1 to see where, and report it)"]
    monkeypatch.setenv("CLIMSEG_DEBUG", "0")  # "0" is off
    assert errors.run_command("climseg-x", broken, []) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert errors.run_command("climseg-x", lambda argv: None, []) == 0
    with pytest.raises(SystemExit):  # argparse's own exit passes through
        errors.run_command("climseg-x", lambda argv: data.staging.main(["--bogus"]), [])


@pytest.mark.slow
@pytest.mark.horovod
def test_the_failing_rank_names_itself(dataset, tmp_path):
    # Rank 1 cannot create its staging directory (a file is in the way); rank 0 can.
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "rank1").write_text("in the way")
    proc = run_horovod([TRAIN, *TINY, "--data-train", dataset / "train", "--stage-dir", stage,
                        "--output-dir", tmp_path / "out", "--batch-size", "1"], check=False,
                       timeout=300)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert (f"train.py: error: rank 1 of 2: --stage-dir {stage}: {stage / 'rank1'}: cannot "
            "create the staging directory: File exists") in output
    # The healthy rank, stopped in a collective, says so rather than blame itself.
    assert ("train.py: error: rank 0 of 2: stopped because another rank failed (its own line "
            "says which and why)") in output or "rank 0 of 2" not in output
    # No traceback from the ranks (horovodrun's own follows their exit).
    assert not [line for line in output.splitlines()
                if line.startswith(("[0]", "[1]")) and "Traceback" in line]
