"""An older Celery for the plain fleet: a virtualenv with `celery[redis]==MINOR.*` from the package
index, made once under var/test-venvs/celery-MINOR/ and reused while its python imports Celery of
that minor. Making one costs about 10-30 s (a venv and one pip install).

Outside CI a venv that cannot be made (no index, no network) skips the tests that need it; with
CI=true it fails them, since CI has the index.
"""

import fcntl
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from unittests.conftest import IN_CI, ROOT

VENVS = ROOT / "var" / "test-venvs"  # var/ is gitignored
PIP_TIMEOUT = 150  # seconds for the whole install


def _version_of(python: Path) -> str | None:
    """The Celery version `python` imports (with the Redis client), or None."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import celery, redis; print(celery.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _run(args: list[str], timeout: float) -> str:
    """Run a step of the venv's making; the reason it failed, or "" when it worked."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{' '.join(args[:4])} ... took more than {timeout:.0f} s"
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or [done.stderr.strip()]
        return f"{' '.join(args[:4])} ... failed ({done.returncode}): {errors[-1][-1500:]}"
    return ""


def _make_venv(minor: str) -> Path:
    """The python of a venv with celery[redis]=={minor}.*, made when missing or of another version."""
    home = VENVS / f"celery-{minor}"
    python = home / "bin" / "python"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"celery-{minor}.lock", "w") as lock:  # one maker at a time (parallel runs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = _version_of(python)
        if version and version.startswith(f"{minor}."):
            return python
        building = VENVS / f"celery-{minor}.building"
        shutil.rmtree(building, ignore_errors=True)
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        reason = _run([sys.executable, "-m", "venv", str(building)], 120) or _run(
            [*pip, "--timeout", "30", f"celery[redis]=={minor}.*"], PIP_TIMEOUT
        )
        if not reason:
            # Only `python -m ...` is used, so a venv moved whole still works (its bin/python is a link).
            shutil.rmtree(home, ignore_errors=True)
            building.rename(home)
        shutil.rmtree(building, ignore_errors=True)
        version = None if reason else _version_of(python)
        if not (version and version.startswith(f"{minor}.")):
            shutil.rmtree(home, ignore_errors=True)
            message = f"cannot make a venv with celery[redis]=={minor}.*: {reason or f'it imports {version}'}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        return python


@pytest.fixture(scope="session")
def older_celery() -> Callable[[str], str]:
    """`older_celery("5.5")`: the python of a venv with Celery 5.5.x, made once and cached."""
    made: dict[str, str] = {}

    def python_for(minor: str) -> str:
        if minor not in made:
            made[minor] = str(_make_venv(minor))
        return made[minor]

    return python_for
