"""Configuration: ``load_config()`` and ``reload_config()``.

Both return a :class:`Config`: its values as attributes (``cfg.max_dynamic_tasks``) and as a
read-only mapping (``cfg["max_dynamic_tasks"]``, ``dict(cfg)``). :data:`DEFAULTS` is the
configuration before pyproject.toml and the environment are applied.
"""

from typing import Final

from auto_workflow._core._config import Config, ConfigValue, get_config, load_config, reload_config

__all__ = ["DEFAULTS", "Config", "ConfigValue", "get_config", "load_config", "reload_config"]

DEFAULTS: Final[Config] = Config()
"""Every key's default, as a read-only mapping (and a :class:`Config`)."""
