"""The failures a user can act on, shared by the CLI and the HTTP API.

Each is shown as one line (`one_line`): the CLI prints it, the API puts it in a problem's
`detail`. Anything not listed here is a bug and is reported without its text.
"""

from __future__ import annotations

from config import UserError


class OptionError(UserError, ValueError):
    """An option with a value that cannot be used; `option` names it without dashes."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.reason = message


class LoadFailed(RuntimeError):
    """The ledger failed during a load; the partial campaign was removed."""


# Every error the user can act on derives from `UserError`; files the user named that cannot
# be opened come from the operating system as they are.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
