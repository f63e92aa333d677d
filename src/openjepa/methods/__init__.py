"""Pretraining methods as plug-ins: the interface, the registry and the built-in methods.

    from openjepa.methods import Method, register_method, build_method

``method.name`` in a config selects a registered method; its ``method.*`` keys are validated against the
method's own config class. A method of your own is one file: subclass :class:`Method` (or a built-in
method), give it a ``name`` and a ``config_class``, and register it (``docs/extending.md``).
"""

from openjepa.methods.base import (
    Method,
    StepContext,
    StepOutput,
    build_method,
    encoder_attribute,
    encoder_role,
    get_method,
    register_method,
)
from openjepa.methods.cjepa import CJEPA
from openjepa.methods.ijepa import IJEPA
from openjepa.methods.lejepa import LeJEPA
from openjepa.methods.loading import load_checkpoint_config, load_encoder, load_model

#: The built-in methods, registered on import; the first is the default ``method.name``.
BUILTIN_METHODS = (IJEPA, CJEPA, LeJEPA)

for _method in BUILTIN_METHODS:
    register_method(_method, default=_method is BUILTIN_METHODS[0])

__all__ = [
    "BUILTIN_METHODS",
    "Method",
    "StepContext",
    "StepOutput",
    "build_method",
    "encoder_attribute",
    "encoder_role",
    "get_method",
    "load_checkpoint_config",
    "load_encoder",
    "load_model",
    "register_method",
]
