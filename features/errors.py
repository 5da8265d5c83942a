"""The one exception type for input a person can fix.

`InputError` (a `ValueError`) names a file, column, row, date or setting that is wrong, or data
too short for the job asked. The command line prints it as one line and exits with code 2;
any other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Input a person can fix; the message says what and where."""
