"""scikit-learn's parameter conventions without importing scikit-learn.

An estimator's parameters are the keyword arguments of its ``__init__``, stored unchanged as
attributes of the same name. :class:`ParamsMixin` gives it ``get_params``/``set_params`` (what
``sklearn.base.clone`` and grid searches call) and a repr that lists the changed parameters,
as ``sklearn.base.BaseEstimator`` does.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params``, ``set_params`` and ``__repr__`` from the ``__init__`` signature."""

    @classmethod
    def _param_names(cls) -> list[str]:
        """The ``__init__`` keyword names, sorted (scikit-learn's order)."""
        signature = inspect.signature(cls.__init__)
        return sorted(name for name, parameter in signature.parameters.items()
                      if name != "self" and parameter.kind != parameter.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every constructor parameter and its current value.

        ``deep`` is accepted for scikit-learn compatibility; no parameter is itself an
        estimator, so deep and shallow parameters are the same.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> ParamsMixin:
        """Set constructor parameters by name (no validation until use); returns ``self``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters are {valid}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: parameter.default for name, parameter
                    in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if repr(value) != repr(defaults[name])]
        return f"{type(self).__name__}({', '.join(changed)})"
