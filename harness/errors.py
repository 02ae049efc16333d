"""The one exception type that means "the user's input is wrong"."""


class BadInput(Exception):
    """Raised for anything the user must fix: the CLI prints its message on one line and exits 2.

    Raise it before anything is written, so that bad input never leaves a partial result.
    """
