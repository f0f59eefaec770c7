"""The one exception type for mistakes a user can make; the CLI prints its message, never a traceback."""


class ConvlensError(Exception):
    """A user-caused problem, described in one sentence that names the thing at fault."""
