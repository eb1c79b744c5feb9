"""Console for people, files for details.

Every step logs in full to build/logs/<step>.log. The console shows the step's own
messages (unless quiet); warnings, including torch 2.14's deprecation warnings for
TorchScript and torch.ao.quantization, go to the log file only.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

LOGGER_NAME = "mobilenet"

# Messages torch 2.14 prints for the deprecated paths the seed pipeline still uses; the
# report explains them once instead of every call repeating them on the console.
_DEPRECATION_PATTERNS = (
    r".*TorchScript.*deprecated.*", r".*torch\.jit\..*deprecated.*", r".*Lite Interpreter is deprecated.*",
    r".*torch\.ao\.quantization.*deprecated.*", r".*deprecated.*torch\.export.*",
)


def quiet_deprecations() -> None:
    """Route warnings to logging (the log file), never to a bare stderr print."""
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for pattern in _DEPRECATION_PATTERNS:
        warnings.filterwarnings("default", message=pattern)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup(logs_dir: Path, step: str, quiet: bool = False) -> logging.Logger:
    """Send this step's log to build/logs/<step>.log and its own messages to the console."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    # A log line that cannot be written (full disk) must not print logging's own traceback;
    # the step's error says what went wrong, in one line.
    logging.raiseExceptions = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(logs_dir / f"{step}.log", mode="a")
    file_handler.setFormatter(formatter)
    file_handler.setLevel(logging.DEBUG)

    root = logging.getLogger()
    # Libraries at INFO (jax and friends log every compilation at DEBUG); ours in full.
    root.setLevel(logging.INFO)
    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG)
    logging.getLogger("invoke").setLevel(logging.WARNING)  # its config chatter is not ours
    for handler in list(root.handlers):
        if getattr(handler, "_mobilenet", False):
            root.removeHandler(handler)
            handler.close()
    file_handler._mobilenet = True
    root.addHandler(file_handler)

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    # Only our own messages reach the console; libraries and warnings stay in the file.
    console.addFilter(lambda record: record.name.startswith(LOGGER_NAME))
    console._mobilenet = True
    root.addHandler(console)

    quiet_deprecations()
    logger = get_logger()
    logger.debug("---- %s ----", step)
    return logger


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


@contextlib.contextmanager
def output_to_log(log: logging.Logger, what: str):
    """Send whatever is written to file descriptors 1 and 2 meanwhile to `log` at debug level.

    Converters and runtimes print through C++ glog, absl, cpuinfo, torch's own
    non-propagating log handlers and bare prints; only redirecting the descriptors catches
    all of them, so the console stays for the pipeline's own messages.
    """
    _flush_std_streams()
    saved = {}
    for fd in (1, 2):
        try:
            saved[fd] = os.dup(fd)
        except OSError:  # closed: nothing to keep quiet there
            pass
    with tempfile.TemporaryFile() as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            _flush_std_streams()
            for fd, original in saved.items():
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                log.debug("%s output:\n%s", what, text)
