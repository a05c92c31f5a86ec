"""Augmentation that respects the globe: longitude rolls and north-south flips.

Both act on one sample in physical units (before normalization) and move the
labels alike. A roll in longitude is an exact symmetry of a global lat-lon
grid. A north-south flip is one too once the meridional winds change sign
(what blew north now blows south); it maps a cyclone in one hemisphere onto a
cyclone, rotating the other way, in the other hemisphere.
"""

import numpy as np

from data.layouts import CHANNELS, channel_indices

MERIDIONAL_WINDS = ("V850", "VBOT")


def roll_longitude(data, labels, shift):
    """Rolls data (H, W, C) and labels (H, W) by `shift` columns eastward."""
    return np.roll(data, shift, axis=1), np.roll(labels, shift, axis=1)


def flip_latitude(data, labels, channels=None):
    """Mirrors data and labels north-south and negates the meridional winds.

    Args:
        data: (H, W, C) fields in physical units.
        labels: (H, W) class ids.
        channels: the channels `data` holds, as for `channel_indices`.
            Defaults to all 16.

    Returns:
        `(data, labels)`, new arrays.
    """
    data = data[::-1].copy()
    indices = channel_indices(channels)
    for position, index in enumerate(indices):
        if CHANNELS[index] in MERIDIONAL_WINDS:
            np.negative(data[..., position], out=data[..., position])
    return data, labels[::-1].copy()


def random_augment(data, labels, rng, *, channels=None, roll=True, flip=True):
    """A random longitude roll (any shift) and, with probability 1/2, a flip.

    Args:
        data: (H, W, C) fields in physical units.
        labels: (H, W) class ids.
        rng: a `numpy.random.Generator`.
        channels: the channels `data` holds. Defaults to all 16.
        roll: apply a random roll. Defaults to True.
        flip: apply a random flip. Defaults to True.

    Returns:
        `(data, labels)`.
    """
    shift = int(rng.integers(data.shape[1]))
    flipped = bool(rng.integers(2))
    if roll and shift:
        data, labels = roll_longitude(data, labels, shift)
    if flip and flipped:
        data, labels = flip_latitude(data, labels, channels)
    return data, labels
