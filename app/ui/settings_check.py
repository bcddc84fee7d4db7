"""Settings are checked with config.toml's own schema, in one place.

What the Settings page (and the wizard) is about to save is written out as the TOML document
``save_config`` would write and checked by ``app.node.config.validate_settings``, the schema every
node start reads config.toml through; then it is read back as the next start would, so the form
cannot save what the next start would refuse or read differently.
"""

from __future__ import annotations

import tomli_w
import tomllib

from app.node.config import ConfigError, NodeConfig, apply_file_settings, to_toml_dict
from app.node.config import validate_settings as validate_file_settings


def validate_settings(config: NodeConfig) -> NodeConfig:
    """``config`` if config.toml's schema accepts what it saves and the next start reads it back
    unchanged; otherwise ConfigError naming the setting."""
    config.validate()
    saved = to_toml_dict(config)
    document = tomllib.loads(tomli_w.dumps(saved))
    validate_file_settings(document)
    read_back = to_toml_dict(apply_file_settings(NodeConfig(data_dir=config.data_dir), document))
    changed = sorted(f"{section}.{key}" for section, values in saved.items() for key, value in values.items()
                     if read_back.get(section, {}).get(key) != value)
    if changed:
        raise ConfigError(f"{', '.join(changed)} would not be read back as saved")
    return config
