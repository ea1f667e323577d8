"""NumPy versions of the DeepOBS image pipeline ops (data.md §8), vectorised over a batch.

Each function mirrors the TF op DeepOBS used (`tf.image.*`), with one random draw per image.
Images are float32 arrays (batch, 32, 32, 3) on the 0-255 scale.
"""

from __future__ import annotations

import numpy as np

PAD = 2  # resize_image_with_crop_or_pad(32 -> 36): 2 zero pixels on each side
MAX_BRIGHTNESS_DELTA = 63.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.2, 1.8)


def pad_and_random_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad to 36x36, then crop 32x32 at a uniform offset 0..4 per axis (TF `random_crop`)."""
    b, h, w, c = x.shape
    padded = np.zeros((b, h + 2 * PAD, w + 2 * PAD, c), dtype=x.dtype)
    padded[:, PAD:PAD + h, PAD:PAD + w] = x
    oy = rng.integers(0, 2 * PAD + 1, size=b)
    ox = rng.integers(0, 2 * PAD + 1, size=b)
    rows = (oy[:, None] + np.arange(h))[:, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, :]
    return padded[np.arange(b)[:, None, None], rows, cols]


def random_flip_left_right(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image horizontally with probability 0.5 (TF: flip when uniform < 0.5)."""
    mirror = rng.random(len(x)) < 0.5
    out = x.copy()
    out[mirror] = x[mirror, :, ::-1]
    return out


def adjust_brightness(x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Add one delta per image to every value (TF `adjust_brightness` on float images)."""
    return x + delta.astype(np.float32)[:, None, None, None]


def adjust_saturation(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """TF `adjust_saturation` (RGB -> HSV, S <- clip(S * factor, 0, 1), back to RGB), in closed form.

    Hue and value are unchanged, so every channel keeps its relative position between the pixel's
    max (V) and min: x' = V - (V - x) * S'/S. Pixels with V <= 0 have S = 0 in TF's kernel and come
    back as grey (V, V, V); the same happens here (ratio 0).
    """
    vmax = x.max(axis=-1, keepdims=True)
    vmin = x.min(axis=-1, keepdims=True)
    pos = vmax > 0
    s = np.where(pos, (vmax - vmin) / np.where(pos, vmax, 1.0), 0.0)
    s_new = np.clip(s * factor.astype(np.float32)[:, None, None, None], 0.0, 1.0)
    ratio = np.where(s > 0, s_new / np.where(s > 0, s, 1.0), 0.0)
    return (vmax - (vmax - x) * ratio).astype(np.float32)


def adjust_contrast(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """TF `adjust_contrast`: per image and channel, (x - mean) * factor + mean (mean over H, W)."""
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x - mean) * factor.astype(np.float32)[:, None, None, None] + mean


def per_image_standardization(x: np.ndarray) -> np.ndarray:
    """TF `per_image_standardization`: (x - mean) / max(std, 1/sqrt(n)) over all values of one image."""
    n = np.prod(x.shape[1:])
    xd = x.reshape(len(x), -1).astype(np.float64)
    mean = xd.mean(axis=1)
    var = np.maximum((xd * xd).mean(axis=1) - mean * mean, 0.0)
    adjusted = np.maximum(np.sqrt(var), 1.0 / np.sqrt(n))
    out = (xd - mean[:, None]) / adjusted[:, None]
    return out.astype(np.float32).reshape(x.shape)


def augment(x: np.ndarray, rng: np.random.Generator, *, flip: bool) -> np.ndarray:
    """DeepOBS training augmentation, in DeepOBS' order: pad/crop, (flip), brightness, saturation, contrast.

    Draws per batch, in this order: crop offsets (y then x), flips (if `flip`), brightness deltas,
    saturation factors, contrast factors, so a batch is a pure function of the generator state.
    """
    b = len(x)
    x = pad_and_random_crop(x, rng)
    if flip:
        x = random_flip_left_right(x, rng)
    x = adjust_brightness(x, rng.uniform(-MAX_BRIGHTNESS_DELTA, MAX_BRIGHTNESS_DELTA, size=b))
    x = adjust_saturation(x, rng.uniform(*SATURATION_RANGE, size=b))
    x = adjust_contrast(x, rng.uniform(*CONTRAST_RANGE, size=b))
    return x
