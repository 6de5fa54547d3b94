"""A module whose import fails, for forkhorn's app-load-failure exit."""

raise RuntimeError("broken_at_import fails on purpose")
