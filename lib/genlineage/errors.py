"""One exception type for bad user input, so that callers (CLI, notebooks) can show the message
as it is: every message names the offending input and says how to fix it."""


class InputError(ValueError):
    """Raised for bad input (missing folder, corrupt image, missing caption, wrong size...).

    The message always names the input and the fix; nothing half-written is left behind.
    """


class NotFiniteError(InputError):
    """Numbers that must be finite are not (NaN or infinity): a broken or hostile model's weights,
    configs or images. Raised where the numbers are converted, before anything judges them (a NaN
    image turned into pixels would be an all-black picture, and a verdict on it a confident lie);
    callers that know which model drew them say so."""
