"""The NumPy augmentation ops equal TensorFlow's `tf.image` ops that DeepOBS used (data.md §8)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402

from testproblems.data import augment


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.float32)
    x[0] = 0.0  # black
    x[1] = 128.0  # grey
    x[2, :, :, 0] = 0.0  # a zero channel
    x[3] = np.floor(x[3] / 64)  # near-black: shifted below 0 by the brightness delta
    return x


def test_saturation_matches_tf(images):
    factors = np.linspace(0.5, 1.5, len(images)).astype(np.float32)
    for shift in (0.0, -0.2, 0.2):  # the brightness delta precedes saturation in DeepOBS' pipeline
        x = images + np.float32(shift)
        ours = augment.adjust_saturation(x, factors)
        ref = np.stack([tf.image.adjust_saturation(xi, f).numpy() for xi, f in zip(x, factors)])
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-3)


def test_contrast_brightness_standardization_flip_crop_match_tf(images):
    f = np.linspace(0.2, 1.8, len(images)).astype(np.float32)
    ref = np.stack([tf.image.adjust_contrast(xi, fi).numpy() for xi, fi in zip(images, f)])
    np.testing.assert_allclose(augment.adjust_contrast(images, f), ref, rtol=1e-5, atol=2e-3)
    d = np.linspace(-63 / 255, 63 / 255, len(images))
    ref = np.stack([tf.image.adjust_brightness(xi, di).numpy() for xi, di in zip(images, d)])
    np.testing.assert_allclose(augment.adjust_brightness(images, d), ref, rtol=0, atol=1e-5)
    ref = tf.image.per_image_standardization(images).numpy()
    np.testing.assert_allclose(augment.per_image_standardization(images), ref, rtol=1e-4, atol=1e-4)
    # flip and crop: replay the generator's draws with TF's deterministic ops
    rng = np.random.default_rng(7)
    ours = augment.pad_and_random_crop(images, np.random.default_rng(7))
    oy, ox = rng.integers(0, 5, len(images)), rng.integers(0, 5, len(images))
    padded = tf.image.resize_with_crop_or_pad(images, 36, 36)
    ref = np.stack([tf.image.crop_to_bounding_box(padded[i], oy[i], ox[i], 32, 32).numpy() for i in range(len(images))])
    np.testing.assert_array_equal(ours, ref)
    assert len({(a, b) for a, b in zip(oy, ox)}) > 1
    ours = augment.random_flip_left_right(images, np.random.default_rng(3))
    mirror = np.random.default_rng(3).random(len(images)) < 0.5
    ref = np.where(mirror[:, None, None, None], tf.image.flip_left_right(images).numpy(), images)
    np.testing.assert_array_equal(ours, ref)
    assert 0 < mirror.sum() < len(images)


def test_augment_flips_half_the_images():
    """Flips happen for about half of the images, and only with flip=True."""
    x = np.full((512, 32, 32, 3), 100.0, np.float32)
    x[:, :, :16, 0] = 200.0  # left half reddish: flips and crops are visible
    out = augment.augment(x, np.random.default_rng(0), flip=True)
    assert out.shape == x.shape and out.dtype == np.float32
    # every later op keeps the order of values within a channel, so red left > red right iff not mirrored
    mirrored = (out[:, 16, 27, 0] > out[:, 16, 4, 0]).mean()
    assert 0.4 < mirrored < 0.6
    no_flip = augment.augment(x, np.random.default_rng(0), flip=False)
    assert (no_flip[:, 16, 27, 0] > no_flip[:, 16, 4, 0]).sum() == 0
