"""User-facing errors: one line, naming the field or file and what was expected."""


class UserError(Exception):
    """Bad input from the user (a config field, a file, an option).

    The CLI prints ``error: <message>`` on one line and exits with status 2; nothing already
    done is lost. Messages name the offending field or file, the value, and what was expected.
    """
