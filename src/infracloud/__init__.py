"""infracloud: donated bare metal turned into a private cloud of short-lived CI test nodes."""

__version__ = "0.1.0"
