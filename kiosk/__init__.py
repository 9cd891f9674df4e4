"""onetap kiosk: the terminal a citizen taps, its durable outbox and its uplink."""

__version__ = "0.1.0"
