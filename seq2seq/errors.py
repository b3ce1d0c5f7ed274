"""The one exception type for user mistakes.

A `UserError` is reported by the CLI as a single line on stderr with exit status 2;
anything else is a bug (exit 1, traceback only with --debug).
"""


class UserError(Exception):
    """Bad input from the user: a missing file, a bad config key, a foreign checkpoint..."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocation failures."""
    message = str(error)
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError)
        and ("out of memory" in message or "can't allocate memory" in message)
    )
