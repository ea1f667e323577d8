"""NumPy versions of the DeepOBS image pipeline ops (data.md §8), vectorised over a batch.

Each function mirrors the TF op DeepOBS used (`tf.image.*`), with one random draw per image; `draw` makes
the random parameters and `apply` applies them, so a pipeline can key the draws by stream position.
Images are float32 arrays (batch, 32, 32, 3) on the 0-255 scale.
"""

from __future__ import annotations

import numpy as np

PAD = 2  # resize_image_with_crop_or_pad(32 -> 36): 2 zero pixels on each side
MAX_BRIGHTNESS_DELTA = 63.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.2, 1.8)


def crop(x: np.ndarray, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """Zero-pad to 36x36, then cut the 32x32 window at offsets (oy[i], ox[i]) of image i."""
    b, h, w, c = x.shape
    padded = np.zeros((b, h + 2 * PAD, w + 2 * PAD, c), dtype=x.dtype)
    padded[:, PAD : PAD + h, PAD : PAD + w] = x
    out = np.empty_like(x)
    for i in range(b):  # one slice copy per image: much faster than fancy indexing
        out[i] = padded[i, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
    return out


def flip_where(x: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Mirror the images with mirror[i] True horizontally."""
    out = x.copy()
    out[mirror] = x[mirror, :, ::-1]
    return out


def pad_and_random_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad to 36x36, then crop 32x32 at a uniform offset 0..4 per axis (TF `random_crop`)."""
    return crop(x, rng.integers(0, 2 * PAD + 1, size=len(x)), rng.integers(0, 2 * PAD + 1, size=len(x)))


def random_flip_left_right(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image horizontally with probability 0.5 (TF: flip when uniform < 0.5)."""
    return flip_where(x, rng.random(len(x)) < 0.5)


def adjust_brightness(x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Add one delta per image to every value (TF `adjust_brightness` on float images)."""
    return x + delta.astype(np.float32)[:, None, None, None]


def adjust_saturation(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """TF `adjust_saturation` (RGB -> HSV, S <- clip(S * factor, 0, 1), back to RGB), in closed form.

    Hue and value are unchanged, so every channel keeps its relative position between the pixel's
    max (V) and min: x' = V - (V - x) * S'/S. Pixels with V <= 0 have S = 0 in TF's kernel and come
    back as grey (V, V, V); the same happens here (ratio 0).
    """
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    vmax = np.maximum(np.maximum(r, g), b)
    vrange = vmax - np.minimum(np.minimum(r, g), b)
    pos = vmax > 0
    s = np.zeros_like(vmax)
    np.divide(vrange, vmax, out=s, where=pos)
    f = factor.astype(np.float32)[:, None, None]
    s_new = np.minimum(s * f, np.float32(1.0))
    ratio = np.zeros_like(vmax)
    np.divide(s_new, s, out=ratio, where=s > 0)
    return vmax[..., None] - (vmax[..., None] - x) * ratio[..., None]


def adjust_contrast(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """TF `adjust_contrast`: per image and channel, (x - mean) * factor + mean (mean over H, W)."""
    b, h, w, c = x.shape
    planes = np.ascontiguousarray(x.reshape(b, h * w, c).transpose(0, 2, 1))  # contiguous: fast pairwise sums
    mean = (planes.sum(axis=-1) / np.float32(h * w))[:, None, None, :]
    return (x - mean) * factor.astype(np.float32)[:, None, None, None] + mean


def per_image_standardization(x: np.ndarray) -> np.ndarray:
    """TF `per_image_standardization`: (x - mean) / max(std, 1/sqrt(n)) over all values of one image
    (std: population standard deviation)."""
    flat = x.reshape(len(x), -1)
    n = flat.shape[1]
    mean = flat.mean(axis=1, dtype=np.float64)
    centered = flat - mean.astype(np.float32)[:, None]
    var = np.einsum("ij,ij->i", centered, centered, dtype=np.float64) / n
    adjusted = np.maximum(np.sqrt(var), 1.0 / np.sqrt(n)).astype(np.float32)
    return (centered / adjusted[:, None]).reshape(x.shape)


#: The random ops of DeepOBS' map function, each a key group of `draw`'s output: `tf.random_crop` draws both
#: offsets with one op, the other ops one value per image each.
OPS = (("oy", "ox"), ("flip",), ("brightness",), ("saturation",), ("contrast",))


def draw(rng: np.random.Generator, n: int, *, flip: bool) -> dict[str, np.ndarray]:
    """The random parameters of `n` augmentations, in DeepOBS' op order: crop offsets (y, then x), flips
    (if `flip`), brightness deltas, saturation factors, contrast factors. Index the arrays to pick images."""
    p = {"oy": rng.integers(0, 2 * PAD + 1, size=n), "ox": rng.integers(0, 2 * PAD + 1, size=n)}
    if flip:
        p["flip"] = rng.random(n) < 0.5
    p["brightness"] = rng.uniform(-MAX_BRIGHTNESS_DELTA, MAX_BRIGHTNESS_DELTA, size=n)
    p["saturation"] = rng.uniform(*SATURATION_RANGE, size=n)
    p["contrast"] = rng.uniform(*CONTRAST_RANGE, size=n)
    return p


def apply(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """DeepOBS training augmentation with parameters `p` (from `draw`, one entry per image), in DeepOBS'
    order: pad/crop, (flip), brightness, saturation, contrast."""
    x = crop(x, p["oy"], p["ox"])
    if "flip" in p:
        x = flip_where(x, p["flip"])
    x = adjust_brightness(x, p["brightness"])
    x = adjust_saturation(x, p["saturation"])
    return adjust_contrast(x, p["contrast"])


def augment(x: np.ndarray, rng: np.random.Generator, *, flip: bool) -> np.ndarray:
    """Augment a batch with fresh draws from `rng` (`apply(x, draw(rng, len(x), flip=flip))`)."""
    return apply(x, draw(rng, len(x), flip=flip))


def scramble(p: dict[str, np.ndarray], rng: np.random.Generator, window: float) -> dict[str, np.ndarray]:
    """Deal each op's draws to nearby positions: position i gets the draw of position j, with j a local
    random rearrangement (sort of i + uniform(0, window)), independently per op of `OPS`.

    Models TF's parallel map (`num_parallel_calls=8` in DeepOBS): every iterator init replays the same
    sequence of draws per random op, but the threads take them in a nondeterministic order, so a draw
    lands a few positions away from where it landed in the previous pass (README: verification).
    """
    n = len(p["oy"])
    out = {}
    for group in OPS:
        if group[0] not in p:
            continue
        src = np.argsort(np.arange(n) + rng.uniform(0.0, window, n), kind="stable")
        for k in group:
            out[k] = p[k][src]
    return out
