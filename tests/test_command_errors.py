"""How every command ends on an error: one line, status 2 for bad usage and 1 for a failed run,
the traceback only with --debug or CLIMSEG_DEBUG=1, and the failing rank named under Horovod."""

import os

import pytest
from conftest import TESTS_DIR, run_horovod, run_python

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


def _run(command, argv, env=None):
    """Runs a command in a fresh interpreter (train.py, or a console script's main)."""
    if command == "train.py":
        return run_python([TRAIN, *TINY, *argv], check=False, env_overrides=env)
    module = {"climseg-stats": "data.stats", "climseg-stage": "data.staging"}[command]
    code = f"import sys; from {module} import main; sys.exit(main())"
    return run_python(["-c", code, *argv], check=False, env_overrides=env)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("debug", ["", "--debug", "CLIMSEG_DEBUG=1"])
def test_an_error_is_one_line_with_the_status_of_its_kind(dataset, case, debug):
    command, argv, status, line = CASES[case]
    argv = [a.format(d=dataset) for a in argv] + (["--debug"] if debug == "--debug" else [])
    env = {"CLIMSEG_DEBUG": "1" if debug.startswith("CLIMSEG_DEBUG") else None}
    proc = _run(command, argv, env)
    assert proc.returncode == status
    assert proc.stderr.strip().splitlines()[-1] == line.format(d=dataset)
    if debug:  # the traceback first, with the cause of the error
        assert "Traceback (most recent call last):" in proc.stderr
        assert "data.errors.CommandError: " in proc.stderr
    else:
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not os.path.exists(dataset / "out" / "checkpoints")


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
