"""The version of microfw, on the lowest floor so that any module may read it."""

__version__ = "0.1.0"
