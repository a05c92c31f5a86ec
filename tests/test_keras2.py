"""Importing climseg selects Keras 2 (tf-keras) and oneDNN, for Horovod too."""

import textwrap

import pytest
from conftest import run_python


@pytest.mark.slow
def test_import_zoo_then_horovod_gives_tf_keras_objects(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        import os
        assert "TF_USE_LEGACY_KERAS" not in os.environ or os.environ["TF_USE_LEGACY_KERAS"] == "1"
        import zoo  # noqa: F401
        import horovod.tensorflow.keras as hvd
        import tensorflow as tf
        import tf_keras

        assert tf.keras.layers.Dense is tf_keras.layers.Dense, tf.keras.layers.Dense
        opt = hvd.DistributedOptimizer(tf.keras.optimizers.SGD(0.1))
        assert isinstance(opt, tf_keras.optimizers.Optimizer), type(opt).__mro__
        cb = hvd.callbacks.BroadcastGlobalVariablesCallback(0)
        assert isinstance(cb, tf_keras.callbacks.Callback), type(cb).__mro__
        print("ONEDNN", os.environ["TF_ENABLE_ONEDNN_OPTS"])
    """))
    env_free = {"TF_USE_LEGACY_KERAS": None, "TF_ENABLE_ONEDNN_OPTS": None}
    proc = run_python([script], env_overrides=env_free)
    assert "ONEDNN 1" in proc.stdout


@pytest.mark.slow
def test_users_onednn_choice_is_kept(tmp_path):
    script = tmp_path / "check.py"
    script.write_text("import os, data\nprint('ONEDNN', os.environ['TF_ENABLE_ONEDNN_OPTS'])\n")
    proc = run_python([script], env_overrides={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert "ONEDNN 0" in proc.stdout


@pytest.mark.slow
def test_tf_models_official_imports_without_protobuf_version_error(tmp_path):
    proc = run_python(["-c", "import climseg_tf, official.vision.modeling"])
    assert "VersionError" not in proc.stderr, proc.stderr[-2000:]
    assert "incompatible Protobuf" not in proc.stderr, proc.stderr[-2000:]
