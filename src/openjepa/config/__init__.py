"""Typed configuration: dataclasses with one source of defaults, from YAML plus ``key=value`` overrides.

    cfg = load_config("configs/demo.yaml", ["optim.lr=5e-4", "run.out_dir=runs/try"])

A config has one section per concern: ``method`` (which method, and that method's own keys), ``model`` (the
encoder), ``data``, ``optim``, ``run`` and ``eval``. The ``method`` section's keys come from the method's
own config class: each method registers it (:func:`register_method_config`), so this module never names a
method. ``method: NAME`` is short for ``method: {name: NAME}`` (every other key at its default).

Unknown keys, values of the wrong type and numbers out of range fail with the key's full name and what is
allowed: every numeric field declares its range (:func:`bounded`), checked in one place
(:func:`check_config`), which also runs each method's own checks (``MethodConfig.check``). ``to_dict`` gives
plain Python containers (what is written to ``config.yaml`` in the run folder and into checkpoints).
Configs in the layout of earlier versions are read as the current one (:func:`migrate_config`).

Every key is documented in its class's ``Attributes:`` docstring; :func:`describe` and
:func:`reference_markdown` (``docs/config.md``) are generated from those descriptions.
"""

from openjepa.config.legacy import migrate_config, migrate_key
from openjepa.config.parse import from_dict, load_config, parse_override, save_config, to_dict
from openjepa.config.reference import config_rows, describe, field_descriptions, reference_markdown
from openjepa.config.sections import (
    DEVICE_NAMES,
    MAX_EPOCHS,
    MAX_SEED,
    Config,
    ConfigError,
    ConfigLayoutWarning,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    Range,
    RunConfig,
    bounded,
    check_config,
    check_out_dir,
    check_ranges,
    default_method_name,
    field_range,
    is_device_name,
    method_config_class,
    method_names,
    register_method_config,
)

__all__ = [
    "DEVICE_NAMES",
    "MAX_EPOCHS",
    "MAX_SEED",
    "Config",
    "ConfigError",
    "ConfigLayoutWarning",
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "Range",
    "RunConfig",
    "bounded",
    "check_config",
    "check_out_dir",
    "check_ranges",
    "config_rows",
    "default_method_name",
    "describe",
    "field_descriptions",
    "field_range",
    "from_dict",
    "is_device_name",
    "load_config",
    "method_config_class",
    "method_names",
    "migrate_config",
    "migrate_key",
    "parse_override",
    "reference_markdown",
    "register_method_config",
    "save_config",
    "to_dict",
]
