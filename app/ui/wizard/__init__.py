"""First-run wizard: welcome, wallet, recovery phrase, hardware check, modes, limits, join."""
