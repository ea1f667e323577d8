"""``nonlinear(base, power=...)``: put the element-wise map φ in front of any Keras optimizer.

For every tensor w chosen by the selection rule, the wrapped optimizer receives ĝ = φ(g) instead of g and
applies its own update (Adam, RMSprop, ...) to it; other tensors pass g unchanged. With φ the identity
(power = 1) the wrapper is step-for-step the base optimizer. Works with ``apply``/``apply_gradients`` and,
through ``stateless_apply``, inside ``model.fit`` on the tensorflow and jax backends.
"""

from __future__ import annotations

from typing import Any

import keras

from . import maps, selection
from .kernel_map import dense


class NonlinearWrapper(keras.optimizers.Optimizer):
    """ĝ = φ(g) on selected tensors (else g), then ``inner_optimizer``'s update with ĝ.

    Learning rate, iterations and loss scaling are the inner optimizer's; ``variables`` lists the wrapper's
    own bookkeeping variables followed by the inner optimizer's.
    """

    def __init__(
        self,
        inner_optimizer,
        elementwise_map: Any = None,
        power: float | None = None,
        select: Any = selection.DEFAULT_RULE,
        name: str | None = None,
    ):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                f"nonlinear() wraps a keras.optimizers.Optimizer instance, got {type(inner_optimizer).__name__}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.elementwise_map = maps.resolve_map(elementwise_map, power)
        self.power = None if power is None else float(power)
        self.select = select
        self._select_fn = selection.resolve_rule(select)
        self.nlwu_provenance: dict = {
            "base_optimizer": type(inner_optimizer).__name__,
            **maps.map_description(self.elementwise_map),
        }

    def build(self, var_list):
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._map_mask = {self._var_key(v): bool(self._select_fn(v)) for v in var_list}
        self.nlwu_provenance.update(selection.selection_record(var_list, self.select))

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        """ĝ = φ(g) for the selected tensors, then ``inner_optimizer.apply(ĝ, trainable_variables)``."""
        if not self.built:
            self.build(trainable_variables)
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        mapped = [
            g if g is None or not self._map_mask[self._var_key(v)] else self.elementwise_map(dense(g))
            for g, v in zip(grads, variables)
        ]
        return self.inner_optimizer.apply(mapped, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):  # pragma: no cover - apply() delegates
        raise NotImplementedError("NonlinearWrapper delegates whole steps to its inner optimizer")

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "elementwise_map": maps.map_description(self.elementwise_map)["map"],
            "power": self.power,
            "select": selection.rule_name(self.select),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


def nonlinear(
    base_optimizer,
    power: float | None = None,
    select: Any = selection.DEFAULT_RULE,
    elementwise_map: Any = None,
    name: str | None = None,
) -> NonlinearWrapper:
    """Wrap ``base_optimizer`` so that it steps with ĝ = φ_p(g) = sign(g)·|g|^p on the tensors chosen by
    ``select`` (default rank ≥ 2); ``elementwise_map`` replaces φ_p by another map (name or callable)."""
    if power is None and elementwise_map is None:
        raise ValueError("nonlinear() needs power=<number > 0> or elementwise_map=<name or callable>")
    return NonlinearWrapper(base_optimizer, elementwise_map=elementwise_map, power=power, select=select, name=name)
