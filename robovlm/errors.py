"""The base of every error a user can fix (a file, a config, an option, a recording): the CLI prints one line and
exits 2. A base of its own, in a module that imports nothing, so the CLI can catch them without importing torch and
the model code (about 5 s of a bag tool's start) for commands that never touch a model."""


class UserError(Exception):
    """A mistake in what the user gave; the message says what and how to fix it."""
