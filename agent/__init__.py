"""venue-agent: takes online orders, keeps them in a durable outbox, gets them into the POS or onto paper."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("venue-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
