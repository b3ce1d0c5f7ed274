"""The one exception type for user mistakes, and the one way messages reach stderr.

A `UserError` is reported by the CLI as a single line on stderr with exit status 2;
anything else is a bug (exit 1, traceback only with --debug).
"""

import sys
from typing import NoReturn

from tqdm import tqdm


class UserError(Exception):
    """Bad input from the user: a missing file, a bad config key, a foreign checkpoint..."""


class Terminated(BaseException):
    """SIGTERM, raised wherever the program is, as Ctrl-C raises KeyboardInterrupt: the
    cleanups on the way out run (an output's temp file is removed), and `except
    Exception` does not stop it."""


def raise_terminated(signum: int, frame: object) -> NoReturn:
    """The SIGTERM handler of the command line (a training installs its own)."""
    raise Terminated


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocation failures."""
    message = str(error)
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError)
        and ("out of memory" in message or "can't allocate memory" in message)
    )


def to_stderr(text: str) -> None:
    """Messages never stop the work: a closed or broken stderr drops them. (With file
    descriptor 2 closed, sys.stderr is None and print(file=sys.stderr) writes to stdout.)
    A progress bar on stderr is redrawn below the text, not cut through by it."""
    if sys.stderr is None:
        return
    try:
        tqdm.write(text, file=sys.stderr, end="")
        sys.stderr.flush()
    except (OSError, ValueError):  # ValueError: the stream object itself was closed
        pass
