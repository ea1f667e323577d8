"""``KernelMapOptimizer``: the one Keras 3 optimizer behind every built-in registry entry (protocol §1.1).

Per trainable tensor w, with ĝ = φ(g) if w is selected (rule, protocol §1.2) else ĝ = g:

    GD:          w ← w − d·w − η·ĝ
    momentum:    a ← μ·a + ĝ;   w ← w − d·w − η·a
    Nesterov:    a ← μ·a + ĝ;   w ← w − d·w − η·(ĝ + μ·a)

d = 0 without decoupled decay, d = λ·η ('scaled') or λ·η/(1 − μ) ('momscaled') on the decayed tensors
(the selected ones by default, or all with ``decay_on='all'``). Only ``keras.ops`` in the update, so it
runs under the tensorflow, jax and torch backends.

Every searched hyperparameter is data, not a Python constant: η (Keras' ``learning_rate`` variable), p
(``power``), μ (``momentum``) and the decay coefficient (λ, or λ/(1 − μ) for 'momscaled', computed in float64
as before) are optimizer variables, and the special cases p = 1, p = 0.5 and μ = 0 are chosen with
``ops.where``. One compiled step therefore serves any values, which is what population training
(``runners.executors.population``) vmaps over; each value still takes exactly the arithmetic of its special case.
What stays structural (fixed when the optimizer is built): the map, Nesterov or not, whether there is a
momentum buffer (``momentum_buffer``, default μ > 0) and whether decoupled decay is applied (λ > 0).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from . import maps, selection, transforms


def dense(gradient):
    """Dense form of a gradient: TensorFlow ``IndexedSlices`` (embedding lookups) are densified, since φ
    acts on the full gradient of the tensor (protocol §1.2) and the momentum step is dense anyway."""
    if type(gradient).__name__ == "IndexedSlices":
        import tensorflow as tf  # IndexedSlices exist only on the TensorFlow backend: never loaded on jax/torch

        return tf.convert_to_tensor(gradient)
    return gradient


class KernelMapOptimizer(keras.optimizers.Optimizer):
    """TF1-semantics gradient descent / momentum / Nesterov with an element-wise map φ on selected tensors
    and optional decoupled weight decay (update rules in the module docstring).

    Args:
        learning_rate: η > 0 (float or Keras schedule).
        elementwise_map: φ; a name from ``optimizers.maps.MAPS``, a callable, or None (signed power with
            ``power``; identity if ``power`` is None).
        power: p of the signed power map φ_p(g) = sign(g)·|g|^p.
        momentum: μ in [0, 1); 0 gives plain gradient descent (no buffer).
        nesterov: Nesterov form of the momentum step.
        weight_decay_opt: λ ≥ 0 of the decoupled decay; 0 disables it.
        decay_scaling: 'scaled' (d = λ·η) or 'momscaled' (d = λ·η/(1 − μ)).
        select: selection rule for φ (``optimizers.select``), default 'rank>=2'.
        decay_on: 'selected' (default) or 'all' trainable tensors get the decoupled decay.
        momentum_buffer: keep a momentum buffer even for μ = 0 (default: only for μ > 0), so members of a
            population with μ = 0 and μ > 0 share one program; μ = 0 then steps with ĝ exactly.
        **kwargs: Keras base-optimizer arguments (name, clipnorm, loss_scale_factor, ...).
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        elementwise_map: Any = None,
        power: float | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay_opt: float = 0.0,
        decay_scaling: str = "scaled",
        select: Any = selection.DEFAULT_RULE,
        decay_on: str = "selected",
        momentum_buffer: bool | None = None,
        name: str | None = None,
        **kwargs,
    ):
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        weight_decay_opt = float(weight_decay_opt)
        if not weight_decay_opt >= 0.0:
            raise ValueError(f"weight_decay_opt must be a number >= 0, got {weight_decay_opt!r}")
        if decay_scaling not in transforms.DECAY_SCALINGS:
            raise ValueError(
                f"decay_scaling must be one of {', '.join(transforms.DECAY_SCALINGS)}, got {decay_scaling!r}"
            )
        if isinstance(learning_rate, int | float) and not isinstance(learning_rate, bool):
            if not learning_rate > 0:
                raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
            learning_rate = float(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.elementwise_map = maps.resolve_map(elementwise_map, power)
        self.power = None if power is None else float(power)
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.weight_decay_opt = weight_decay_opt
        self.decay_scaling = decay_scaling
        self.select = select
        self._select_fn = selection.resolve_rule(select)
        self.decay_on = selection.validate_decay_on(decay_on)
        self.momentum_buffer = momentum > 0.0 if momentum_buffer is None else bool(momentum_buffer)
        self.decays = weight_decay_opt > 0.0
        coefficient = weight_decay_opt / (1.0 - momentum) if decay_scaling == "momscaled" else weight_decay_opt
        # the hyperparameters as optimizer variables (after iteration and learning_rate, in this order)
        self.hyper_variables = {}
        for key, value in (
            ("power", 1.0 if power is None else float(power)),
            ("momentum", momentum),
            ("decay_coefficient", coefficient),
        ):
            with keras.name_scope(self.name, caller=self):
                variable = keras.Variable(
                    value, name=key, dtype=keras.backend.floatx(), trainable=False, aggregation="only_first_replica"
                )
            self._track_variable(variable)
            self.hyper_variables[key] = variable
        self._direction = transforms.nesterov_direction if self.nesterov else transforms.heavy_ball_direction
        self.nlwu_provenance: dict = {
            **maps.map_description(self.elementwise_map),
            "momentum": momentum,
            "nesterov": self.nesterov,
            "momentum_semantics": "TF1 MomentumOptimizer (a <- mu*a + g_hat; w <- w - lr*a)",
            "weight_decay_opt": weight_decay_opt,
            "decay_scaling": decay_scaling if weight_decay_opt > 0 else None,
        }

    def build(self, variables):
        """Momentum buffers (one per variable, if μ > 0) and the fixed map/decay masks of ``variables``."""
        if self.built:
            return
        super().build(variables)
        self._map_mask = [bool(self._select_fn(v)) for v in variables]
        self._decay_mask = [s or self.decay_on == "all" for s in self._map_mask]
        self._accumulators = self.add_optimizer_variables(variables, "momentum") if self.momentum_buffer else []
        self.nlwu_provenance.update(
            selection.selection_record(variables, self.select, self.decay_on if self.decays else None)
        )

    def structure(self) -> tuple:
        """What the compiled step depends on besides the hyperparameter values: optimizers with equal
        structures run as one program with their variables as data (population training)."""
        return (
            type(self).__name__,
            maps.map_description(self.elementwise_map).get("map"),
            self.nesterov,
            self.momentum_buffer,
            self.decays,
            self.decay_scaling if self.decays else None,
            selection.rule_name(self.select),
            self.decay_on,
        )

    def _mapped(self, gradient):
        """φ(g), with the power read from its variable when the map takes one (``SignedPower.apply``)."""
        if hasattr(self.elementwise_map, "apply") and self.power is not None:
            return self.elementwise_map.apply(gradient, self.hyper_variables["power"])
        return self.elementwise_map(gradient)

    def update_step(self, gradient, variable, learning_rate):
        """One tensor's step: ĝ = φ(g) if selected; momentum buffer; decay-then-descend (module docstring)."""
        i = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = dense(gradient)
        g_hat = self._mapped(gradient) if self._map_mask[i] else gradient
        g_hat = ops.cast(g_hat, dtype)
        if self.momentum_buffer:
            mu = ops.cast(self.hyper_variables["momentum"], dtype)
            a = self._accumulators[i]
            a_new = transforms.accumulate(a, g_hat, mu)
            self.assign(a, a_new)
            direction = ops.where(ops.greater(mu, 0.0), self._direction(a_new, g_hat, mu), g_hat)
        else:
            direction = g_hat
        if self.decays and self._decay_mask[i]:
            d = ops.cast(transforms.decoupled_decay(learning_rate, self.hyper_variables["decay_coefficient"]), dtype)
            self.assign(variable, transforms.decay_then_descend(variable, direction, lr, d))
        else:
            self.assign_sub(variable, transforms.scale_by_learning_rate(direction, lr))

    def get_config(self):
        config = super().get_config()
        map_config = maps.map_description(self.elementwise_map)
        config.update(
            {
                "elementwise_map": map_config["map"] if map_config["map"] in maps.MAPS else None,
                "power": self.power,
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay_opt": self.weight_decay_opt,
                "decay_scaling": self.decay_scaling,
                "select": selection.rule_name(self.select),
                "decay_on": self.decay_on,
            }
        )
        return config
