"""Shared test set-up: Keras 2, few threads, seeded RNGs, a horovodrun helper, and commands
run in this process."""

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

# Before TensorFlow is imported: two cores are shared by pytest and, in
# Horovod tests, by two more ranks.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import climseg_tf  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)

# isort: split
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
WORKERS_DIR = TESTS_DIR / "workers"
BIN_DIR = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002  (code under test may use the legacy global RNG)
    tf.keras.utils.set_random_seed(0)
    yield
    tf.keras.backend.clear_session()


def worker_env(threads=1, overrides=None):
    """Environment for a child process: `threads` intra-op threads per process.

    `overrides` sets variables; a value of None removes one.
    """
    env = dict(os.environ)
    env.update(
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR.parent), str(WORKERS_DIR)] + env.get("PYTHONPATH", "").split(os.pathsep)
    ).rstrip(os.pathsep)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(args, timeout=600, threads=2, cwd=None, env_overrides=None, check=True):
    """Runs `python ARGS` in a fresh interpreter; fails the test with its output."""
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        env=worker_env(threads, env_overrides),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"python {' '.join(map(str, args))} exited {proc.returncode}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


def run_horovod(args, np_=2, timeout=600, check=True, cwd=None, env_overrides=None):
    """Runs `horovodrun -np N -H localhost:N --gloo python ARGS`, one thread per rank."""
    cmd = [str(BIN_DIR / "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo",
           sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, env=worker_env(1, env_overrides), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n"
                    f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def run_mpirun(args, np_=2, timeout=600, check=True, env_overrides=None):
    """Runs `mpirun -np N python ARGS` (OpenMPI, as root where needed), one thread per rank."""
    env = worker_env(1, env_overrides)
    forwarded = [a for name in ("PYTHONPATH", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "CLIMSEG_CACHE")
                 if name in env for a in ("-x", name)]
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none",
           "--mca", "btl_vader_single_copy_mechanism", "none", *forwarded,
           *(["--allow-run-as-root"] if os.geteuid() == 0 else []),
           sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n"
                    f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


class Finished(NamedTuple):
    """What a command run in this process returned and printed (as `subprocess.run` gives)."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def command_state():
    """Runs a command's `main` in this process and undoes what it leaves behind.

    Restored afterwards: the environment, the working directory, the SIGINT
    and SIGTERM handlers, Keras's global precision policy, the RNGs, the open
    model-output files of data.layouts (closed) and Horovod (shut down if the
    command initialized it). Horovod runs through Gloo here: a lone process
    then joins no job and can initialize again later, whereas an MPI
    singleton cannot be initialized after it is finalized (the process
    aborts), and leaves PMIx variables in the environment of every process
    started after it. Horovod that an earlier test initialized (with MPI,
    say) is left running: the command's `hvd.init()` does nothing then.
    """
    hvd = sys.modules.get("horovod.tensorflow")
    horovod_before = hvd is not None and hvd.is_initialized()
    environ = dict(os.environ)
    cwd = os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    policy = tf.keras.mixed_precision.global_policy()
    rng = random.getstate(), np.random.get_state()  # noqa: NPY002
    os.environ.update(HOROVOD_CONTROLLER="gloo", HOROVOD_CPU_OPERATIONS="gloo")
    try:
        yield
    finally:
        hvd = sys.modules.get("horovod.tensorflow")
        if hvd is not None and hvd.is_initialized() and not horovod_before:
            hvd.shutdown()
        from data import layouts

        with layouts._OPEN_LOCK:
            opened = list(layouts._OPENED.values())
            layouts._OPENED.clear()
            layouts._KINDS.clear()
        for source in opened:
            source.close()
        tf.keras.mixed_precision.set_global_policy(policy)
        tf.keras.backend.clear_session()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.chdir(cwd)
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)
        random.setstate(rng[0])
        np.random.set_state(rng[1])  # noqa: NPY002


def run_main(main, args, capfd=None):
    """Runs `main([str(a) for a in args])` in this process, as a command runs it.

    Returns a `Finished`: the status it returned (or exited with) and what it
    printed, read through `capfd` (both file descriptors, so TensorFlow's own
    lines too) when given, else through Python's streams.
    """
    argv = [str(a) for a in args]
    if capfd is not None:
        capfd.readouterr()  # only this command's output
        out, err = contextlib.nullcontext(), contextlib.nullcontext()
    else:
        out, err = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
            io.StringIO())
    with command_state(), out as stdout, err as stderr:
        try:
            status = main(argv)
        except SystemExit as e:  # argparse's exits, as the process would end
            status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not isinstance(e.code, int | None):
                print(e.code, file=sys.stderr)
        except BaseException:
            # Not what a command does (run_command catches errors): show where.
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    if capfd is not None:
        captured = capfd.readouterr()
        return Finished(status or 0, captured.out, captured.err)
    return Finished(status or 0, stdout.getvalue(), stderr.getvalue())


def check_main(main, args):
    """`run_main` without capture fixtures (e.g. in a module-scoped fixture); fails the test
    with the command's output unless it ends with status 0."""
    proc = run_main(main, args)
    if proc.returncode != 0:
        pytest.fail(f"main({' '.join(map(str, args))}) returned {proc.returncode}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n"
                    f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def small_disk(tmp_path):
    """A real, nearly full file system: a 2 MiB tmpfs mounted for the test.

    Needs root (as in CI and the development machines); skipped otherwise.
    """
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(disk, leave):
    """Fills the file system of `disk` (e.g. `small_disk`) up to `leave` bytes free."""
    import shutil

    with open(os.path.join(disk, "filler"), "wb") as f:
        try:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
        except OSError:
            pass


def read_masks(path):
    """The `mask` of a climseg-predict output file: (T, H, W), or (H, W) for one time step."""
    import netCDF4

    with netCDF4.Dataset(path) as f:
        masks = np.asarray(f["mask"][...])
    return masks[0] if masks.shape[0] == 1 else masks


def cf_problems(path, report):
    """The CF-1.8 checks the IOOS compliance checker fails on `path` (JSON report at `report`),
    and whether it scored every point."""
    import json

    checker = os.path.join(os.path.dirname(sys.executable), "compliance-checker")
    # Its exit status is not used: it is 2 when one of its own checks raises (e.g. its
    # monotonicity check on a string coordinate), which the report then leaves out.
    subprocess.run([checker, "--test=cf:1.8", "--format=json", "-o", str(report), str(path)],
                   capture_output=True, timeout=300)
    result = json.loads(open(report).read())["cf:1.8"]
    failed = [(check["name"], check["msgs"]) for priority in ("high_priorities",
                                                              "medium_priorities")
              for check in result[priority] if check["value"][0] < check["value"][1]]
    return failed, result["scored_points"] == result["possible_points"]
