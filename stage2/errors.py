"""The one exception type users see: its message is the one-line error printed before a non-zero exit."""


class Stage2Error(Exception):
    """A problem with the input or the recipe, explained in one line (file, record, what is wrong)."""
