"""The `tailor` command line: thin wiring over the stage packages, no logic of its own."""
