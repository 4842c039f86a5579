"""The one error hierarchy of edgeprune.

Every error a user can cause or fix is an :class:`EdgepruneError`. Its message is one line that
says what went wrong and what to do next; the CLI prints it as is and exits with the class's
``exit_code``. Classes also subclass the matching built-in so callers can catch either.

This module imports nothing heavy: the CLI imports it on every run.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUDGET_NOT_MET = 3
EXIT_GATE_FAILED = 4
EXIT_INTERRUPTED = 130


class EdgepruneError(Exception):
    """Base of every error edgeprune raises on purpose.

    ``hint`` is the fix, appended to the message so the one-line form always names one.
    """

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} — {' '.join(self.hint.split())}"
        return text


# --- user input: specs, files, configs ---------------------------------------------------------


class UsageError(EdgepruneError, ValueError):
    """Flags that contradict each other or are missing."""

    exit_code = EXIT_USAGE


class ConfigError(EdgepruneError, ValueError):
    """A TOML file (profile, target, gate file, ratios file) is malformed or has a bad key."""


class ModelSpecError(EdgepruneError, ValueError):
    """A model spec that cannot be parsed or resolved to an ``nn.Module``."""


class CheckpointError(EdgepruneError, ValueError):
    """A weights file that cannot be loaded safely or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that would need arbitrary unpickling; refused, never executed."""


class DataSpecError(EdgepruneError, ValueError):
    """A data spec that cannot be parsed or whose files are missing or malformed."""


class NotFoundError(EdgepruneError, FileNotFoundError):
    """A file, profile or target that does not exist."""


class ForbiddenPickleError(DataSpecError):
    """A data pickle that asks for a class or function outside the allowed set; never run."""


class OutputExistsError(EdgepruneError, FileExistsError):
    """An output that exists already and would be overwritten without ``--force``."""


# --- transforms --------------------------------------------------------------------------------


class PruningError(EdgepruneError, RuntimeError):
    """A pruning request that cannot be carried out on this model."""


class ParityError(EdgepruneError, RuntimeError):
    """A transform (materialize, export) changed outputs beyond its tolerance."""


class MissingDataError(UsageError):
    """A data-driven criterion was asked to score without the data it needs."""


class EvaluationError(EdgepruneError, ValueError):
    """The model and the data do not fit together (shapes, number of classes)."""


class PlottingUnavailable(EdgepruneError, ImportError):
    """matplotlib (the optional ``plots`` extra) is not installed; callers leave the plot out."""


class ExportError(EdgepruneError, RuntimeError):
    """An export that failed or whose artifact does not load."""


class ArtifactError(EdgepruneError, ValueError):
    """An artifact that cannot be read: corrupt, truncated, or of a kind edgeprune does not know."""


# --- devices and measurement -------------------------------------------------------------------


class TargetError(EdgepruneError, RuntimeError):
    """A target that cannot be reached or used."""


class HostUnreachableError(TargetError, ConnectionError):
    """No TCP connection to the device within the timeout."""


class AuthenticationError(TargetError, PermissionError):
    """The device refused our key or agent identities."""


class HostKeyError(TargetError):
    """The device's host key is unknown (and not accepted) or has changed."""


class RuntimeMissingError(TargetError):
    """Python or the model runtime is missing on the device."""


class DeviceOutOfMemoryError(TargetError, MemoryError):
    """The measuring process was killed, probably for memory."""


class DeviceDiskFullError(TargetError, OSError):
    """The device ran out of disk space while receiving an artifact."""


class MeasurementError(TargetError):
    """The runner failed on the device for another reason (e.g. the runtime rejects the model)."""


# --- jobs --------------------------------------------------------------------------------------


class BudgetNotMetError(EdgepruneError):
    """``fit`` could not meet the budget; the best candidate and report are still written."""

    exit_code = EXIT_BUDGET_NOT_MET


class FitBudgetNotMetError(BudgetNotMetError):
    """The budget cannot be met; ``result`` holds the run's outcome (a ``FitResult``; the report
    is already written)."""

    def __init__(self, message: str, *, result: Any, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class GateFailedError(EdgepruneError):
    """``gate`` found at least one budget exceeded."""

    exit_code = EXIT_GATE_FAILED
