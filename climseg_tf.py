"""The one place that chooses how TensorFlow is set up for climseg.

Importing any climseg package (`zoo`, `callbacks`, `data`) or running
`train.py` imports this module first. It must run before TensorFlow is first
imported, because TensorFlow reads these variables once at import:

- `TF_USE_LEGACY_KERAS=1`: `tf.keras` is tf-keras (Keras 2). TensorFlow 2.18
  otherwise hands out Keras 3, whose optimizers Horovod's
  `DistributedOptimizer` wraps without ever averaging gradients.
- `TF_ENABLE_ONEDNN_OPTS=1`: TensorFlow's oneDNN CPU kernels, which it turns
  on by default only on some Intel CPUs; 2.6x faster training measured on an
  AMD CPU (see docs in README). A value the user set is kept.

A user never sets these by hand. If TensorFlow was already imported with
Keras 3 selected, a warning says so, since nothing can be changed any more.
"""

import os
import sys
import warnings

# A user's explicit choice wins for oneDNN; Keras 2 is not optional.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_LEGACY = os.environ.get("TF_USE_LEGACY_KERAS")
if _LEGACY not in (None, "1", "true", "True"):
    warnings.warn(
        f"TF_USE_LEGACY_KERAS={_LEGACY!r} in the environment; climseg needs Keras 2 "
        "(tf-keras) and sets it to '1'.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"

if "tensorflow" in sys.modules:  # Too late to choose: check what we got.
    import tensorflow as _tf

    if not _tf.keras.__name__.startswith("tf_keras"):
        warnings.warn(
            "TensorFlow was imported before climseg and tf.keras is Keras 3 "
            f"({_tf.keras.__name__}); climseg needs tf-keras. Import climseg (or set "
            "TF_USE_LEGACY_KERAS=1) before TensorFlow.",
            stacklevel=2,
        )


def keras_is_tf_keras():
    """Returns True when `tf.keras` resolves to tf-keras (Keras 2)."""
    import tensorflow as tf

    return tf.keras.__name__.startswith("tf_keras")
