"""The one exception type users see: its message is the one-line error printed before a non-zero exit."""


class Stage2Error(Exception):
    """A problem with the input or the recipe, explained in one line (file, record, what is wrong)."""


class SystemRefused(Stage2Error):
    """The system refused a read or a write (a full disk, a file size limit, permissions, an I/O error):
    the run's folder is kept, and `resume=true` continues it once that is fixed. A class of its own, since
    an exception from a worker process arrives without the OSError it was raised from."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first non-blank line (its type's name when it has none)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
