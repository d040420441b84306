"""The wheel, as a user installs it: ``pipx install`` of the built wheel, then its command.

An editable install (what the rest of the suite runs) reads the source tree, so a file the
wheel leaves out (a migration, a template, a static asset) goes unnoticed there. This test
builds the wheel, installs it with pipx (and its dependencies, from pip's cache when the
test environment was just installed) into a scratch home, and runs the installed
``sipbridge demo`` (server, migrations, echo agent and a real call) from the wheel alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.require import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=180,
    )
    (built,) = out.glob("sipbridge-*.whl")
    return built


def test_wheel_holds_every_package_file(wheel: Path) -> None:
    """Every file under src/sipbridge that is not a cache is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "src"
    wanted = {
        path.relative_to(source).as_posix()
        for path in (source / "sipbridge").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert wanted, "no package files found"
    assert sorted(wanted - names) == []


def test_pipx_install_runs(wheel: Path, tmp_path: Path) -> None:
    require("pipx")
    home = tmp_path / "pipx"
    bin_dir = tmp_path / "bin"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIPBRIDGE_")},
        "PIPX_HOME": str(home),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
        "HOME": str(tmp_path / "home"),
        # pip's cache of the wheels the test environment was just installed from (the
        # scratch HOME would otherwise send pip to the index for every dependency).
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
    }
    subprocess.run(
        ["pipx", "install", "--python", sys.executable, str(wheel)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    (venv_site,) = (home / "venvs" / "sipbridge").glob("lib/python*/site-packages")
    command = bin_dir / "sipbridge"
    assert command.exists()
    # The installed package, not the checkout, answers.
    where = subprocess.run(
        [
            str(home / "venvs" / "sipbridge" / "bin" / "python"),
            "-c",
            "import sipbridge; print(sipbridge.__file__)",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert str(venv_site) in where and str(ROOT) not in where
    # The first thing the README suggests: the demo, from the installed wheel alone (its
    # migrations, the built-in echo agent, the client), on free local ports.
    demo = subprocess.run(
        [str(command), "demo", "--duration", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "the whole path works" in demo.stdout
