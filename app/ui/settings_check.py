"""Settings are checked by the same reader that reads config.toml, in one place.

What the Settings page (and the wizard) is about to save is written out as the TOML document
``save_config`` would write, read back through ``apply_file_settings`` (the path every node start
takes) and validated, so the form cannot save what the next start would refuse, and a value the
reader would change (a port, a list) is caught here rather than at the next start.
"""

from __future__ import annotations

import tomli_w
import tomllib

from app.node.config import ConfigError, NodeConfig, apply_file_settings, to_toml_dict


def validate_settings(config: NodeConfig) -> NodeConfig:
    """``config`` if the next start would read back exactly what it saves; otherwise ConfigError
    naming the setting."""
    config.validate()
    saved = to_toml_dict(config)
    read_back = apply_file_settings(NodeConfig(data_dir=config.data_dir), tomllib.loads(tomli_w.dumps(saved)))
    read_back.validate()
    changed = sorted(f"{section}.{key}" for section, values in saved.items() for key, value in values.items()
                     if to_toml_dict(read_back).get(section, {}).get(key) != value)
    if changed:
        raise ConfigError(f"{', '.join(changed)} would not be read back as saved")
    return config
