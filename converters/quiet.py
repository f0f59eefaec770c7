"""Keep the frameworks' own chatter (torch.onnx UserWarnings, TensorFlow/absl/tf2onnx logs) off the terminal.

A conversion otherwise prints screens of warnings about the exporters' internals, which say nothing about the
user's model. `verbose=True` lets everything through; warnings convlens raises itself are always kept.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

from ..engine.errors import ConvlensError, ConvlensWarning

# "absl" is the standard logger absl writes through, so its level also quiets absl
_LOGGERS = ("tf2onnx", "tensorflow", "absl", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "h5py")


@contextlib.contextmanager
def quiet_frameworks(verbose: bool = False):
    if verbose:
        yield
        return
    # TensorFlow reads this when it is first imported (converters import it lazily, inside this block)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _native_stderr_held() as held:
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", category=ConvlensWarning)
            try:
                yield
            except ConvlensError:
                raise
            except BaseException:  # an internal error: what the libraries printed may explain it
                held.replay = True
                raise
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)



class _Held:
    replay = False


@contextlib.contextmanager
def _native_stderr_held():
    """Hold what native code (TensorFlow's C++ and absl logs, written before Python's logging is set up)
    writes to file descriptor 2; drop it afterwards unless `replay` was set."""
    held = _Held()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (captured by a test runner, a notebook)
        yield held
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if held.replay:
                sink.seek(0)
                os.write(fd, sink.read())
