"""The one place control commands are signed and checked with the gaggle's secret.

Senders (``goose-redis control``, the dashboard) sign with ``command_bytes``; the Manager
reads every command with ``read_command``. A command is signed with the gaggle key (the
sender need not know the run), bound to its kind and dated: the Manager refuses it
outside ``auth.WINDOW_S`` and refuses its nonce (the command ``id``) a second time, so a
command is applied once however often it is written. Watching never needs the secret.
"""

from __future__ import annotations

from .auth import Auth, ReplayGuard, Secret
from .protocol import ControlCommand, ProtocolError, Unauthenticated


def command_auth(secret: Secret | None, gaggle: str) -> Auth:
    return Auth(secret, gaggle)


def command_bytes(command: ControlCommand, auth: Auth) -> bytes:
    """The command as written to the ``commands`` stream: with a MAC when there is a secret."""
    return command.to_bytes(auth, run_id="")


def read_command(raw: object, auth: Auth, guard: ReplayGuard, now: float) -> tuple[ControlCommand, str | None]:
    """(the command, why it must be refused or None). Raises ProtocolError for something that
    is not a command at all (nothing to answer to). An unauthenticated command still has an id,
    so its sender gets a one-line refusal instead of a timeout."""
    command = ControlCommand.from_bytes(raw)  # its shape and its id, before anything is trusted
    try:
        ControlCommand.from_bytes(raw, auth, run_id="", now=now)
    except Unauthenticated as exc:
        if auth.enabled:
            return command, f"this gaggle has a secret: give --gaggle-secret to steer it ({exc})"
        return command, f"this gaggle has no secret, but the command is signed ({exc})"
    except ProtocolError as exc:
        return command, str(exc)
    if auth.enabled and (why := guard.admit(command.id, command.at, now)):
        return command, why
    return command, None
