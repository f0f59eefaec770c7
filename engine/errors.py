"""The one exception type for mistakes a user can make; the CLI prints its message, never a traceback."""


class ConvlensError(Exception):
    """A user-caused problem, described in one sentence that names the thing at fault."""


class ConvlensWarning(UserWarning):
    """Something about the user's own model or input worth knowing (a dead filter, an assumed preprocessing)."""
