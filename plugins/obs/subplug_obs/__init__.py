"""subplug_obs: a subplug plugin package."""
