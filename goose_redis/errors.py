"""The one shape every user error takes, as Goose's ``InvalidOption``."""

from __future__ import annotations


def _quote(value: object) -> str:
    """Backslashes, quotes and control characters escaped: the error stays ONE line."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class InvalidOption(Exception):
    """An option (or a load-test definition) the run cannot start with.

    Raised by validation before anything starts; the CLI prints it on one line
    and exits 2, so a user never sees a traceback for their own mistake.
    """

    def __init__(self, option: str, value: object, detail: str) -> None:
        super().__init__(option, value, detail)
        self.option = option
        self.value = value
        self.detail = detail

    def __str__(self) -> str:
        return (
            f'InvalidOption {{ option: "{_quote(self.option)}", value: "{_quote(self.value)}", '
            f'detail: "{_quote(self.detail)}" }}'
        )


class LoadTestError(Exception):
    """A run that started but could not go on (for example Redis gone past its deadline)."""
