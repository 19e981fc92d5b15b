"""Errors the CLI reports as one clear line (exit code 2) instead of a traceback."""


class JmtError(Exception):
    """Base class for user-facing errors: bad params, bad input files, bad names."""


class ParamsError(JmtError, ValueError):
    """A params file that is missing, malformed, or has an unknown key or a bad value."""


class InputError(JmtError, ValueError):
    """Bad user input (a file, folder or option) detected before or during a stage."""


# `jmt predict` and `jmt live` exit with this code (after writing every output) when an input
# decoded with errors (truncated or corrupt: media.DamagedMedia): the outputs cover only the
# frames that decoded, and a warning line named the file.
DAMAGED_EXIT = 3
