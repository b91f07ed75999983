"""The one place control commands are signed and verified with the gaggle's secret.

Every sender (``goose-redis control``, the dashboard) passes its command through
``sign_command`` and the Manager passes every command it reads through
``verify_command``, so the gaggle's secret (``--gaggle-secret`` / ``GOOSE_GAGGLE_SECRET``)
plugs in here and nowhere else. Until the gaggle's message signing lands both are
pass-throughs: a secret given to a sender is carried to this point and not yet used.
"""

from __future__ import annotations

from .protocol import ControlCommand


def sign_command(command: ControlCommand, secret: str | None) -> ControlCommand:
    """The command as sent: with its ``mac`` once the gaggle signs its messages."""
    # The signing work: return dataclasses.replace(command, mac=auth.mac(secret, command.signed_fields()))
    # when ``secret`` is set.
    return command


def verify_command(command: ControlCommand, secret: str | None) -> str | None:
    """Why the Manager must refuse ``command`` (None: it may apply it).

    Watching never needs the secret; steering does, when the gaggle has one."""
    # The signing work: when ``secret`` is set, refuse a missing or wrong ``mac``
    # ("this gaggle has a secret: give --gaggle-secret to steer it").
    return None
