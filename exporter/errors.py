"""Errors a user can fix: each names the flag, the value given and what is allowed."""


class InputError(Exception):
    """A mistake in the user's input. The CLI prints it on one line and exits with 2."""

    def __init__(self, flag: str, value, allowed: str, reason: str | None = None):
        self.flag, self.value, self.allowed, self.reason = flag, value, allowed, reason
        text = f"{flag} {value}: {reason + '; ' if reason else ''}allowed: {allowed}"
        super().__init__(text)


class PluginSurgeryError(Exception):
    """--plugins on a graph without the shape the surgery expects; the message says what is
    missing (the surgeries in onnx/plugins/ raise it, the CLI prints it as a --plugins error)."""
