"""Shared plumbing of the atheris harnesses in this folder.

Each harness (``fuzz_<target>.py``) defines ``check(data: bytes) -> None``, which feeds one
input to its target and raises (AssertionError or whatever escaped the target) when the
target misbehaved. Run as a script, the harness hands ``check`` to atheris/libFuzzer;
imported (``tests/test_fuzz.py``), ``check`` replays the corpus without atheris.

    python fuzz/fuzz_sip.py -max_total_time=60 fuzz/corpus/sip
    python fuzz/fuzz_sip.py path/to/crash-input        # replay one input
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
DEFAULT_SECONDS = 60


@contextlib.contextmanager
def instrumented(enabled: bool) -> Iterator[None]:
    """Instrument the sipbridge modules imported inside the block for coverage feedback,
    when ``enabled`` (the harness runs as the fuzzer); a no-op otherwise."""
    if not enabled:
        yield
        return
    import atheris

    with atheris.instrument_imports(include=["sipbridge"]):
        yield


def run(check: Callable[[bytes], None], name: str) -> None:
    """Fuzz ``check`` with libFuzzer flags from the command line.

    Defaults that the command line can override (libFuzzer keeps the last value of a
    flag): ``-max_total_time=60``, and ``-dict=fuzz/<name>.dict`` when that file exists.
    """
    import atheris

    defaults = [f"-max_total_time={DEFAULT_SECONDS}"]
    dictionary = FUZZ_DIR / f"{name}.dict"
    if dictionary.exists() and not any(arg.startswith("-dict=") for arg in sys.argv[1:]):
        defaults.append(f"-dict={dictionary}")
    atheris.instrument_func(check)
    atheris.Setup([sys.argv[0], *defaults, *sys.argv[1:]], check)
    atheris.Fuzz()


def split(data: bytes, separator: bytes, limit: int) -> list[bytes]:
    """``data`` cut at ``separator`` into at most ``limit`` pieces (the last keeps the rest)."""
    return data.split(separator, limit - 1)
