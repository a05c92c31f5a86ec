"""climseg-predict --kernels and --jit-compile: deeplabv3plus's two kernel sets give the
same masks from one checkpoint, compiled by XLA or not; a model without kernel sets
refuses the flag."""

import argparse

import netCDF4
import numpy as np
import pytest
from conftest import run_main

import data
from data.errors import CommandError
from inference import predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A deeplabv3plus checkpoint as train.py writes one (its weights as initialised)."""
    import tensorflow as tf

    import zoo
    from callbacks.checkpoint import write_checkpoint

    root = tmp_path_factory.mktemp("deeplab")
    data.generate(root / "inputs", 2, 32, 48, seed=5)
    data.write_stats(root / "stats.h5", data.compute_stats(root / "inputs"))
    tf.keras.utils.set_random_seed(3)
    kwargs = {"input_shape": [32, 48, 16], "num_classes": 3}
    model = zoo.get_model("deeplabv3plus", **kwargs, kernels="reference")
    meta = {"model": "deeplabv3plus", "model_kwargs": kwargs, "channels": list(range(16)),
            "normalization": "minmax", "stats": "stats.h5"}
    path = write_checkpoint(root / "checkpoints", model, None, 1, 1, meta=meta,
                            files={"stats.h5": root / "stats.h5"})
    tf.keras.backend.clear_session()
    return root, path


def _predict(checkpoint, out, *flags):
    root, best = checkpoint
    proc = run_main(predict.main, ["--checkpoint", best, "--input", root / "inputs",
                                   "--output-dir", out, "--no-maps", "--probabilities",
                                   "float32", *flags])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {}
    for path in sorted(out.glob("*.mask.nc")):
        with netCDF4.Dataset(path) as f:
            found[path.name] = (np.asarray(f["mask"][:]), np.stack(
                [np.asarray(f[f"probability_{c}"][:]) for c in data.CLASSES], -1))
    assert len(found) == 2
    return proc.stdout, found


def test_both_kernel_sets_and_xla_give_the_same_masks(checkpoint, tmp_path):
    out, cpu = _predict(checkpoint, tmp_path / "cpu")  # no GPU here: the CPU kernels
    assert "kernels cpu (no GPU visible: the CPU kernels, measured faster on CPU)" in out
    out, other = _predict(checkpoint, tmp_path / "reference", "--kernels", "reference",
                          "--jit-compile")
    assert "kernels reference (--kernels); forward compiled with XLA" in out
    for name, (mask, probabilities) in cpu.items():
        np.testing.assert_allclose(other[name][1], probabilities, atol=2e-5)
        top2 = np.sort(probabilities, -1)[..., -2:]
        clear = top2[..., 1] - top2[..., 0] > 1e-4  # not a near tie
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(other[name][0][clear], mask[clear])


def test_kernels_of_a_model_without_kernel_sets_is_a_usage_error():
    meta = {"model": "tiramisu", "model_kwargs": {"input_shape": [32, 48, 16]}}
    args = argparse.Namespace(precision="fp32", kernels="cpu", jit_compile=False)
    with pytest.raises(CommandError) as caught:
        predict._model_at("climseg-predict", meta, "/x/model.weights.h5", (32, 48), args,
                          "a.nc")
    assert str(caught.value) == ("--kernels: the checkpoint's tiramisu has one kernel set; "
                                 "--kernels chooses deeplabv3plus's")
    assert caught.value.status == 2
