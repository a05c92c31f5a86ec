"""data.augment: longitude rolls and north-south flips move fields and labels alike."""

import numpy as np

from data.augment import flip_latitude, random_augment, roll_longitude


def _sample():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 8, 16)).astype(np.float32), rng.integers(0, 3, (6, 8))


def test_roll_moves_fields_and_labels_east():
    data, labels = _sample()
    rolled, rolled_labels = roll_longitude(data, labels, 3)
    np.testing.assert_array_equal(rolled[:, 3], data[:, 0])
    np.testing.assert_array_equal(rolled_labels[:, 3], labels[:, 0])
    np.testing.assert_array_equal(rolled[:, 0], data[:, 5])


def test_flip_mirrors_and_negates_meridional_winds_only():
    data, labels = _sample()
    flipped, flipped_labels = flip_latitude(data, labels)
    expected = data[::-1].copy()
    expected[..., [2, 4]] *= -1  # V850, VBOT
    np.testing.assert_array_equal(flipped, expected)
    np.testing.assert_array_equal(flipped_labels, labels[::-1])
    subset, _ = flip_latitude(data[..., [4, 0]], labels, channels="VBOT,TMQ")
    np.testing.assert_array_equal(subset, np.stack([-data[::-1, :, 4], data[::-1, :, 0]], -1))


def test_random_augment_is_a_function_of_the_generator():
    data, labels = _sample()
    # Labels are a function of the fields; they must stay so after augmentation.
    labels = (data[..., 0] > 0).astype(np.int32) + (data[..., 7] > 1)
    out = [random_augment(data, labels, np.random.default_rng(s)) for s in range(8)]
    again = random_augment(data, labels, np.random.default_rng(3))
    np.testing.assert_array_equal(out[3][0], again[0])
    for x, y in out:
        np.testing.assert_array_equal(y, (x[..., 0] > 0).astype(np.int32) + (x[..., 7] > 1))
    rng = np.random.default_rng(3)
    shift, flipped = int(rng.integers(8)), bool(rng.integers(2))
    x, y = roll_longitude(data, labels, shift)
    if flipped:
        x, y = flip_latitude(x, y)
    np.testing.assert_array_equal(again[0], x)
    assert len({x.tobytes() for x, _ in out}) > 4
