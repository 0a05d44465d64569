"""Model backends shipped with subplug (each one is a plugin module)."""
