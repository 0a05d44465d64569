"""subplug_training: a subplug plugin package."""
