"""Horovod data parallelism with tf-keras: real horovodrun, two Gloo ranks."""

import numpy as np
import pytest
from conftest import WORKERS_DIR, run_horovod, run_python


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_equal_one_process_on_the_combined_batch(tmp_path):
    run_horovod([WORKERS_DIR / "tiny_sgd.py", tmp_path / "hvd"])
    run_python([WORKERS_DIR / "tiny_sgd.py", tmp_path / "single", "--single", "2"])

    rank0 = _weights(tmp_path / "hvd" / "rank0.npz")
    rank1 = _weights(tmp_path / "hvd" / "rank1.npz")
    single = _weights(tmp_path / "single" / "rank0.npz")
    for a, b in zip(rank0, rank1, strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical across ranks
    for a, b in zip(rank0, single, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_reference_run_depends_on_the_data(tmp_path):
    """The comparison above can fail: one rank's half of the batch gives other weights."""
    run_python([WORKERS_DIR / "tiny_sgd.py", tmp_path / "one", "--single", "1"])
    run_python([WORKERS_DIR / "tiny_sgd.py", tmp_path / "two", "--single", "2"])
    one = _weights(tmp_path / "one" / "rank0.npz")
    two = _weights(tmp_path / "two" / "rank0.npz")
    assert max(np.abs(a - b).max() for a, b in zip(one, two, strict=True)) > 1e-3
