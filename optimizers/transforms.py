"""Pure update pieces (protocol §1.1), composed by ``KernelMapOptimizer``; all arithmetic is ``keras.ops``.

Notation per trainable tensor w: g gradient, ĝ = φ(g) on selected tensors (else g), η learning rate,
μ momentum, a momentum buffer (starts at 0), λ ``weight_decay_opt``, d the decoupled decay factor.
"""

from __future__ import annotations

from keras import ops

DECAY_SCALINGS = ("scaled", "momscaled")


def accumulate(a, g_hat, momentum: float):
    """a ← μ·a + ĝ (TF1 ``MomentumOptimizer`` buffer: accumulates transformed gradients, no learning rate)."""
    return ops.add(ops.multiply(a, momentum), g_hat)


def heavy_ball_direction(a_new, g_hat, momentum: float):
    """Direction of plain momentum: a (the updated buffer)."""
    return a_new


def nesterov_direction(a_new, g_hat, momentum: float):
    """Direction of TF1 Nesterov momentum: ĝ + μ·a (with the updated buffer a)."""
    return ops.add(g_hat, ops.multiply(a_new, momentum))


def decay_factor(learning_rate, weight_decay_opt: float, momentum: float, scaling: str):
    """d = λ·η (``'scaled'``, GD-W) or d = λ·η/(1 − μ) (``'momscaled'``, M-W and MN-W)."""
    if scaling == "scaled":
        return ops.multiply(learning_rate, weight_decay_opt)
    if scaling == "momscaled":
        return ops.multiply(learning_rate, weight_decay_opt / (1.0 - momentum))
    raise ValueError(f"decay scaling must be one of {DECAY_SCALINGS}, got {scaling!r}")


def decoupled_decay(learning_rate, coefficient):
    """d = η·c with c = λ ('scaled') or λ/(1 − μ) ('momscaled') given as data (``decay_factor``'s value,
    with the coefficient computed once in float64)."""
    return ops.multiply(learning_rate, coefficient)


def scale_by_learning_rate(direction, learning_rate):
    """Step η·direction (subtracted from w: w ← w − η·direction)."""
    return ops.multiply(learning_rate, direction)


def decay_then_descend(w, direction, learning_rate, d):
    """w ← (w − d·w) − η·direction: decoupled decay first, then the base step whose gradient was taken at
    the pre-decay w (TensorFlow Addons ``DecoupledWeightDecayExtension``). The decay never enters the
    momentum buffer and never passes through φ."""
    return ops.subtract(ops.subtract(w, ops.multiply(d, w)), scale_by_learning_rate(direction, learning_rate))
