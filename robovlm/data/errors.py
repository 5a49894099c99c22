"""The data layer's error, in a module of its own so every reader can raise it without importing another."""

from ..errors import UserError


class EpisodeError(UserError, ValueError):
    """An episode file is unreadable or malformed; the message names the file and the problem."""
