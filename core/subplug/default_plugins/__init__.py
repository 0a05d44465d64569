"""The core's default plugins: registered exactly like third-party ones."""
