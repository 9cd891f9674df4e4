"""The kiosk's exception hierarchy: one base, each error also a builtin."""


class KioskError(Exception):
    """Base of every error the kiosk raises on purpose."""


class ConfigError(KioskError, ValueError):
    """A configuration file or override is invalid; the message names key and file."""


class OutboxError(KioskError, RuntimeError):
    """The outbox could not do what was asked."""


class OutboxFullError(OutboxError, OSError):
    """The disk (or the outbox's size cap) is full: the tap was NOT recorded."""
