"""The atheris fuzz harnesses in fuzz/ (issue 6, "Proof").

Two parts:

* every file of ``fuzz/corpus/<target>/`` through that harness's ``check`` in-process,
  so the corpus (with every crash found so far) is a regression suite even without
  atheris;
* each harness run as the real fuzzer for ``SIPBRIDGE_FUZZ_SECONDS`` seconds (default 10;
  CI sets 60; a fixed seed, see SEED) on a copy of its corpus; a crash, a leak past
  ``-rss_limit_mb`` or an input slower than ``-timeout`` fails the test with the crashing
  input and the fuzzer's output.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.require import require

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = ("sip", "sdp", "rtp", "agent")
SECONDS = int(os.environ.get("SIPBRIDGE_FUZZ_SECONDS", "10"))
# A fixed seed by default, so a CI run explores the same inputs as the last local run
# of the same length (a landing is not decided by luck); SIPBRIDGE_FUZZ_SEED=0 lets
# libFuzzer pick a new seed each run, for exploring.
SEED = int(os.environ.get("SIPBRIDGE_FUZZ_SEED", "1"))
# Per-input time limit: anything this slow on one datagram is a denial of service.
INPUT_TIMEOUT = 10


def _check(target: str) -> Callable[[bytes], None]:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    module = importlib.import_module(f"fuzz_{target}")
    check: Callable[[bytes], None] = module.check
    return check


def _corpus_files() -> list[tuple[str, Path]]:
    return [
        (target, path)
        for target in TARGETS
        for path in sorted((CORPUS / target).iterdir())
        if path.is_file()
    ]


def test_corpus_is_small() -> None:
    files = [path for _, path in _corpus_files()]
    assert all((CORPUS / target).is_dir() for target in TARGETS)
    assert len(files) <= 400
    assert sum(path.stat().st_size for path in files) <= 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("target", "path"),
    [pytest.param(t, p, id=f"{t}/{p.name}") for t, p in _corpus_files()],
)
def test_corpus_replays(target: str, path: Path) -> None:
    """Each corpus input (seeds and every crash found so far) passes its checker."""
    _check(target)(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target: str, tmp_path: Path) -> None:
    require("atheris")
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / target, corpus)  # new inputs go to the copy, not the repo
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(FUZZ / f"fuzz_{target}.py"),
        f"-max_total_time={SECONDS}",
        f"-seed={SEED}",
        "-rss_limit_mb=2048",
        f"-timeout={INPUT_TIMEOUT}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    # Not under pytest-cov's subprocess coverage: tracing would slow the fuzzer down.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COV_CORE_", "COVERAGE_PROCESS_START"))
    }
    try:
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SECONDS + 180,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"fuzz_{target} did not stop after {SECONDS} s:\n{exc.stderr}")
    output = result.stdout + result.stderr
    if result.returncode != 0:
        # pytest keeps tmp_path (its last three runs): the inputs stay there to replay.
        crashes = [str(path) for path in sorted(artifacts.iterdir())]
        replay = crashes[0] if crashes else "<input>"
        pytest.fail(
            f"fuzz_{target} failed (exit {result.returncode}); crash inputs: "
            f"{crashes or 'none written'}\n"
            f"replay: python fuzz/fuzz_{target}.py {replay}\n"
            f"once fixed, add the input to fuzz/corpus/{target}/\n\n{output[-8000:]}"
        )
    assert "Done" in output or "stat::number_of_executed_units" in output, output[-4000:]
