"""The one exception type for errors a user can cause, and how a user's value is shown in one."""

import itertools
import reprlib


class KDistillError(Exception):
    """Bad input from the user: the message names the field, the value and the fix."""


SHOWN_CHARS = 80  # an echoed value is shown in at most this many characters


class _Bounded(reprlib.Repr):
    """reprlib's repr, bounded: a few items of a few levels, never the whole value."""

    def repr_int(self, x, level):  # the digits of a huge integer cost time (and past 4300, an error)
        return super().repr_int(x, level) if x.bit_length() <= 256 else f"<an integer of {x.bit_length():,} bits>"

    def repr_dict(self, x, level):  # in the order given (reprlib sorts the keys)
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items + (["..."] if len(x) > self.maxdict else [])) + "}"


_REPR = _Bounded()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN_CHARS + 2


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` in at most ``limit`` characters (cut with '...'), in time that does not
    grow with the value: a 50 MB string or a list of millions of items is shown by its start."""
    return cut(repr(value[: limit + 1]) if isinstance(value, str) else _REPR.repr(value), limit)


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` itself (no quotes) in at most ``limit`` characters, cut with '...'."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class KDistillWarning(UserWarning):
    """Something kdistill worked around (a damaged checkpoint skipped, a cache rebuilt): the
    command line shows it as one line, ``warning: <message>``."""
