"""The local stack's one error (standard library only: `python3 -m stack.build` runs before
the project's virtual environment exists)."""


class StackError(RuntimeError):
    """A part of the local stack could not be built, started or stopped."""
