"""The one exception type for errors a user can cause."""


class KDistillError(Exception):
    """Bad input from the user: the message names the field, the value and the fix."""


class KDistillWarning(UserWarning):
    """Something kdistill worked around (a damaged checkpoint skipped, a cache rebuilt): the
    command line shows it as one line, ``warning: <message>``."""
