"""The examples the README points to run as written, on two Horovod ranks."""

import pytest
from conftest import TESTS_DIR, run_horovod

EXAMPLES = TESTS_DIR.parent / "examples"


@pytest.mark.slow
@pytest.mark.horovod
def test_hello_horovod_ranks_agree():
    proc = run_horovod([EXAMPLES / "hello_horovod.py", "--steps", "3"])
    assert "climseg demo: 2 ranks trained 3 steps" in proc.stdout
    assert "weights identical on all ranks: True" in proc.stdout


@pytest.mark.slow
@pytest.mark.horovod
def test_train_with_callbacks_example(tmp_path):
    proc = run_horovod([EXAMPLES / "train_with_callbacks.py", "--epochs", "2", "--steps", "2",
                        "--checkpoint-dir", tmp_path])
    assert "MetricAverage over 2 ranks at the end of epoch 2" in proc.stdout
    assert "samples/s on 2 ranks" in proc.stdout
    # Rank 0 alone wrote one checkpoint per epoch.
    assert sorted(p.name for p in tmp_path.glob("epoch*.index")) == ["epoch01.index",
                                                                      "epoch02.index"]
