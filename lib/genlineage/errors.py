"""One exception type for bad user input, so that callers (CLI, notebooks) can show the message
as it is: every message names the offending input and says how to fix it."""


class InputError(ValueError):
    """Raised for bad input (missing folder, corrupt image, missing caption, wrong size...).

    The message always names the input and the fix; nothing half-written is left behind.
    """
