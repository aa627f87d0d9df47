"""Configuration: ``load_config()`` and ``reload_config()``."""

from auto_workflow._core._config import Config, get_config, load_config, reload_config

__all__ = ["Config", "get_config", "load_config", "reload_config"]
