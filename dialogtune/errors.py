"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class DialogtuneError(Exception):
    """A problem with the user's input: a file, a row, a column, an option or a folder.

    The message is one line that names the bad thing and says how to fix it.
    """
