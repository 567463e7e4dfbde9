"""The compact models (gaincell.compact) as lmfit Models, with parameters named as in the surrogate file."""
from __future__ import annotations

import inspect
from typing import Callable

import lmfit

from gaincell.compact import spec


def _with_signature(fn: Callable, inputs: list[str], params: list[str]) -> Callable:
    """Give a **kwargs function an explicit signature so lmfit sees its parameter names."""
    kind = inspect.Parameter
    fn.__signature__ = inspect.Signature([kind(n, kind.POSITIONAL_OR_KEYWORD) for n in inputs]
                                         + [kind(p, kind.KEYWORD_ONLY, default=0.0) for p in params])
    return fn


def lmfit_model(model_id: str, config: dict) -> lmfit.Model:
    """The lmfit Model of a model id with its config baked in (parameters named as in the file)."""
    model = spec(model_id)
    names = model.param_names(config)

    def function(*args, **kwargs):
        inputs = dict(zip(model.inputs, args)) | {k: kwargs.pop(k) for k in model.inputs if k in kwargs}
        return model.function(config, kwargs, **inputs)

    function.__name__ = model_id.replace("/", "_").replace("-", "_")
    return lmfit.Model(_with_signature(function, list(model.inputs), names),
                       independent_vars=list(model.inputs), name=model_id)
