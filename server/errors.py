"""The server's exception hierarchy: one base, each error also a builtin."""


class ServerError(Exception):
    """Base of every error the server raises on purpose."""


class ConfigError(ServerError, ValueError):
    """A configuration file or override is invalid; the message names key and file."""


class StoreError(ServerError, RuntimeError):
    """The store could not do what was asked."""


class MailError(ServerError, OSError):
    """The SMTP server could not be reached or refused a message."""
