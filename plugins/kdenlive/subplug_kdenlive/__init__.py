"""subplug_kdenlive: a subplug plugin package."""
