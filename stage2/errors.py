"""The one exception type users see: its message is the one-line error printed before a non-zero exit."""


class Stage2Error(Exception):
    """A problem with the input or the recipe, explained in one line (file, record, what is wrong)."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first non-blank line (its type's name when it has none)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
