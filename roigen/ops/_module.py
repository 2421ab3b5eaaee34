"""The nn.Module form of the op functions (as torchvision's RoIAlign wraps roi_align)."""

from __future__ import annotations

import inspect

from torch import nn


class OpModule(nn.Module):
    """`forward(*inputs)` is `function(*inputs, *attributes)`.

    `class RoIPool(OpModule, function=roi_pool)` is the whole definition: the
    constructor takes the function's arguments after its `inputs` tensors (up to
    its keyword-only ones), with the function's defaults, and keeps them as
    attributes, as torchvision's modules do; they make `extra_repr`.
    """

    def __init_subclass__(cls, function=None, inputs: int = 2, **kwargs):
        super().__init_subclass__(**kwargs)
        if function is None:
            return
        params = list(inspect.signature(function).parameters.values())[inputs:]
        attributes = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        cls.function = staticmethod(function)
        cls._signature = inspect.Signature(attributes)

        def __init__(self, *args, **kwargs):
            OpModule.__init__(self, *args, **kwargs)

        # Each module's own constructor signature, for help() and IDEs.
        __init__.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *attributes])
        cls.__init__ = __init__

    def __init__(self, *args, **kwargs):
        super().__init__()
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        self._attribute_names = tuple(bound.arguments)
        for name, value in bound.arguments.items():
            setattr(self, name, value)

    def _attributes(self) -> list:
        return [getattr(self, name) for name in self._attribute_names]

    def forward(self, *inputs):
        return self.function(*inputs, *self._attributes())

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in zip(self._attribute_names, self._attributes()))
