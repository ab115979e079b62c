"""The one exception for "your config is wrong", at the bottom of the package so that every layer can
raise it and a caller catches every config mistake with one `except ConfigError`. It imports nothing
from kvexp."""


class ConfigError(ValueError):
    """A configuration that cannot run, found before anything expensive starts. The message names the
    offending setting and the fix."""
