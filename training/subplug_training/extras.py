"""The ``train`` extra (datasets, jiwer, sacrebleu, accelerate): present or not, and the
``subplug doctor`` check that says so."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from subplug.errors import SubplugError
from subplug.types import CheckResult, CheckStatus, DoctorCheck

#: Import name → distribution name of what ``pip install "subplug[train]"`` adds.
TRAIN_EXTRAS = {
    "datasets": "datasets",
    "jiwer": "jiwer",
    "sacrebleu": "sacrebleu",
    "accelerate": "accelerate",
}
INSTALL_HINT = 'pip install "subplug[train]" (from a checkout: pip install -e ".[train]")'


def missing_extras(names: tuple[str, ...] = tuple(TRAIN_EXTRAS)) -> list[str]:
    """The training libraries among ``names`` that cannot be imported."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def require_extras(command: str, names: tuple[str, ...] = tuple(TRAIN_EXTRAS)) -> None:
    """Raise one clear error (``training-extras-missing``) naming the install command
    when a library ``command`` needs is missing."""
    missing = missing_extras(names)
    if missing:
        raise SubplugError(
            "training-extras-missing",
            f"subplug {command} needs {', '.join(missing)}, which is not installed.",
            INSTALL_HINT,
        )


def check_training() -> CheckResult:
    """Doctor check: are the training libraries installed (a warning when not: only
    ``subplug train`` and ``subplug eval`` need them)?"""
    missing = missing_extras()
    if missing:
        return CheckResult(
            CheckStatus.WARN,
            f"subplug train/eval unavailable: {', '.join(missing)} missing",
            INSTALL_HINT,
        )
    versions = {name: importlib.metadata.version(dist) for name, dist in TRAIN_EXTRAS.items()}
    return CheckResult(
        CheckStatus.OK,
        "subplug train/eval ready: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        details=versions,
    )


def doctor_checks() -> list[DoctorCheck]:
    """The training package's doctor checks."""
    return [DoctorCheck("training", check_training, "training")]
