"""The one exception type for errors a user can cause."""


class KDistillError(Exception):
    """Bad input from the user: the message names the field, the value and the fix."""
