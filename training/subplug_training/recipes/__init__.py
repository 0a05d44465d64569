"""Training recipes shipped with subplug_training (TOML files; see docs/training.md)."""
