"""Errors caused by what the user gave charfeat (a config value, a file, a bucket), not by a bug.

Their messages say what is wrong, which key, file or object, and what to do; they are the only
errors a user should need to read.
"""


class UserError(Exception):
    """An error in the user's input or config, explained by its message alone."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work, found before anything is built."""
