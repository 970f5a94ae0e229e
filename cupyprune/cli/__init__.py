"""The `cupyprune` command: thin click wrappers over the library."""
