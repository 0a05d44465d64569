"""The one error type for failures a user can cause.

A :class:`SubplugError` carries a kebab-case ``reference`` (stable, documented, good for
searching), a one-line ``message`` and a ``hint`` that says what to do. The CLI prints it
without a traceback (``--debug`` shows one). Bugs are not wrapped in it.
"""

from __future__ import annotations


class SubplugError(Exception):
    """A failure the user can act on: bad input, missing model, unwritable folder…"""

    def __init__(
        self,
        reference: str,
        message: str,
        hint: str | None = None,
        *,
        context: str | None = None,
        exit_code: int = 2,
    ) -> None:
        super().__init__(message)
        self.reference = reference
        self.message = message
        self.hint = hint
        self.context = context
        self.exit_code = exit_code

    def __str__(self) -> str:
        text = f"{self.message} [{self.reference}]"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, str | None]:
        """The error as plain data (used by ``--jsonl`` and ``--json`` outputs)."""
        return {
            "reference": self.reference,
            "message": self.message,
            "hint": self.hint,
            "context": self.context,
        }


class Cancelled(SubplugError):
    """The user interrupted a job (Ctrl-C, SIGTERM); journals are kept for resuming."""

    def __init__(self, message: str = "Interrupted; finished chunks are kept.") -> None:
        super().__init__(
            "interrupted",
            message,
            "Run the same command again to resume where it stopped.",
            exit_code=130,
        )
