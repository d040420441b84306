"""What a test needs from the machine, and what happens when it is missing.

A test names its needs with ``@pytest.mark.requires("sipp", "root")`` (or calls
:func:`require` inside). A missing need **fails** the test under CI (``CI=true``), where
``.ci/run`` installs everything: a broken install step must turn CI red, not leave the
checks silently out. On a developer's machine the test is skipped with the install hint.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "NEEDS", "Need", "in_ci", "missing", "require"]

# Debian's Chromium, driven by Playwright (whose own browser download is not used).
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True, slots=True)
class Need:
    """One thing a test needs: how to tell it is there, and how to get it."""

    present: Callable[[], bool]
    hint: str


def _opus() -> bool:
    from sipbridge.codecs.opus import opus_available

    return opus_available()


def _console_script() -> bool:
    return Path(sys.executable).with_name("sipbridge").exists() or bool(shutil.which("sipbridge"))


NEEDS: dict[str, Need] = {
    "sipp": Need(lambda: shutil.which("sipp") is not None, "apt-get install sip-tester"),
    "sipp-pcap": Need(
        lambda: all(
            (Path("/usr/share/sip-tester") / name).exists()
            for name in ("g711a.pcap", "dtmf_2833_1.pcap")
        ),
        "apt-get install sip-tester (its pcap files)",
    ),
    "kamailio": Need(
        lambda: shutil.which("kamailio") is not None or Path("/usr/sbin/kamailio").exists(),
        "apt-get install kamailio",
    ),
    "baresip": Need(lambda: shutil.which("baresip") is not None, "apt-get install baresip-core"),
    "openssl": Need(lambda: shutil.which("openssl") is not None, "apt-get install openssl"),
    "libopus": Need(_opus, "apt-get install libopus0"),
    "root": Need(lambda: os.geteuid() == 0, "run as root (the loopback sniffer needs it)"),
    "atheris": Need(
        lambda: importlib.util.find_spec("atheris") is not None, "pip install -e '.[test]'"
    ),
    "pipecat": Need(
        lambda: importlib.util.find_spec("pipecat") is not None, "pip install -e '.[test]'"
    ),
    "systemd-analyze": Need(
        lambda: shutil.which("systemd-analyze") is not None, "apt-get install systemd"
    ),
    "pipx": Need(lambda: shutil.which("pipx") is not None, "apt-get install pipx"),
    "chromium": Need(
        lambda: Path(CHROMIUM).exists(), "apt-get install chromium (Debian's, for Playwright)"
    ),
    "playwright": Need(
        lambda: importlib.util.find_spec("playwright") is not None, "pip install -e '.[test]'"
    ),
    "console-script": Need(_console_script, "pip install -e . (the sipbridge console script)"),
}


def in_ci() -> bool:
    """True under CI (``CI=true``), where every need must be met."""
    return os.environ.get("CI", "").lower() == "true"


def missing(*names: str) -> list[str]:
    """The needs among ``names`` this machine does not meet, each with its hint."""
    unknown = [name for name in names if name not in NEEDS]
    if unknown:
        raise ValueError(f"unknown requirement(s) {unknown}; known: {sorted(NEEDS)}")
    return [f"{name} ({NEEDS[name].hint})" for name in names if not NEEDS[name].present()]


def require(*names: str) -> None:
    """Fail (under CI) or skip (elsewhere) the running test unless every need is met."""
    absent = missing(*names)
    if not absent:
        return
    message = "missing: " + ", ".join(absent)
    if in_ci():
        pytest.fail(f"{message} — CI must run this test, not skip it", pytrace=False)
    pytest.skip(message, allow_module_level=True)
