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


def test_gpu_choice_is_one_per_local_rank():
    import climseg_tf

    assert climseg_tf.choose_gpu(0, 3) is None  # no GPU: nothing to pin
    assert [climseg_tf.choose_gpu(4, r) for r in range(4)] == [0, 1, 2, 3]
    assert climseg_tf.choose_gpu(1, 3) == 0  # srun --gpus-per-task=1: each rank sees its own
    with pytest.raises(ValueError, match="local rank 4 but this node shows 4 GPUs; start at "
                                         "most 4 ranks per node"):
        climseg_tf.choose_gpu(4, 4)


@pytest.mark.slow
def test_pin_gpu_is_a_no_op_without_gpus(tmp_path):
    script = tmp_path / "pin.py"
    script.write_text(textwrap.dedent("""
        import climseg_tf
        import tensorflow as tf

        assert not tf.config.list_physical_devices("GPU")
        before = tf.config.get_visible_devices()
        print("PINNED", climseg_tf.pin_gpu(), climseg_tf.local_rank())
        assert tf.config.get_visible_devices() == before
        print(float(tf.reduce_sum(tf.ones(3))))  # TensorFlow still runs, on the CPU
    """))
    proc = run_python([script], env_overrides={"OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert "PINNED None 1" in proc.stdout and "3.0" in proc.stdout


@pytest.mark.parametrize("module, argv", [
    ("train", ["--help"]),
    ("train", ["predict", "--help"]),
    ("data.synthetic", ["--help"]),
    ("data.stats", ["--help"]),
    ("data.staging", ["--help"]),
])
def test_help_answers_without_importing_tensorflow(tmp_path, module, argv):
    script = tmp_path / "help.py"
    script.write_text(textwrap.dedent(f"""
        import importlib, sys
        sys.argv = ["cmd", *{argv!r}]
        try:
            importlib.import_module({module!r}).main()
        except SystemExit as e:
            assert e.code == 0, e.code
        print("TENSORFLOW", "tensorflow" in sys.modules)
    """))
    proc = run_python([script])
    assert "usage:" in proc.stdout and "TENSORFLOW False" in proc.stdout
