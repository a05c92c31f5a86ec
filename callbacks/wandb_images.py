"""A few validation samples as W&B images with predicted and true masks."""

import numpy as np
import tensorflow as tf

from data.layouts import CLASSES

CLASS_LABELS = {class_id: name.replace("_", " ") for class_id, name in enumerate(CLASSES)}


class WandbValidationImages(tf.keras.callbacks.Callback):
    """Logs validation samples with predicted and true masks to W&B at each validation.

    The image is the first selected channel (TMQ when selected) scaled to its
    range; W&B draws the masks as toggleable overlays. Only the process that
    talks to W&B (rank 0) should have this callback; it runs the model on its
    own, outside any collective.

    Args:
        samples: a list of `(fields, labels)`: float32 (H, W, C) unnormalized
            and int (H, W), e.g. from `data.read_sample`.
        normalize: `(offset, scale)` applied as `(x - offset) * scale` before
            the model sees the fields, as in training. Defaults to None.
        channels: the selected channel indices, to find TMQ (index 0).
            Defaults to None (the first channel is shown).
    """

    def __init__(self, samples, normalize=None, channels=None):
        super().__init__()
        if not samples:
            raise ValueError("WandbValidationImages needs at least one (fields, labels) sample")
        self.samples = samples
        self.normalize = normalize
        self.display = list(channels).index(0) if channels and 0 in channels else 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_loss" not in logs:
            return  # no validation this epoch (fit's validation_freq)
        import wandb

        fields = np.stack([s[0] for s in self.samples]).astype(np.float32)
        inputs = fields if self.normalize is None else \
            (fields - self.normalize[0]) * self.normalize[1]
        predictions = np.argmax(self.model.predict_on_batch(inputs), axis=-1)
        images = []
        for (field, truth), prediction in zip(self.samples, predictions, strict=True):
            shown = field[..., self.display]
            low, high = float(shown.min()), float(shown.max())
            gray = ((shown - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
            images.append(wandb.Image(gray[::-1], masks={  # north up
                "prediction": {"mask_data": prediction[::-1].astype(np.uint8),
                               "class_labels": CLASS_LABELS},
                "ground_truth": {"mask_data": np.asarray(truth)[::-1].astype(np.uint8),
                                 "class_labels": CLASS_LABELS},
            }))
        wandb.log({"validation/samples": images}, commit=False)
