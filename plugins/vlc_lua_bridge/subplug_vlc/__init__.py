"""subplug_vlc: a subplug plugin package."""
