"""User-facing errors.

Every problem caused by the user's input (a file, a device, a shape, a granularity) is raised as
:class:`LasnetError` with a one-line message naming what is wrong; the CLI prints it without a traceback.
"""


class LasnetError(Exception):
    """A one-line, user-facing error (bad file, device, shape, granularity, ...)."""
