"""Exceptions of the POS drivers.

The hierarchy::

    PosDriverError              root; never escapes ``Driver.inject`` (which returns a result instead)
    ├── PosConfigError          the driver cannot be built from its settings (missing url, bad secret)
    ├── PosResolveError         an ``mdns:`` name did not resolve to a host and port in time
    └── NotificationInvalid     a notification the POS sent (a webhook body) is not one the driver can read

Outcomes of a POS call are values, not exceptions: see ``drivers.pos.base`` (``Injected``,
``Accepted``, ``Transient``, ``Permanent``). Each driver maps ``httpx`` errors to those at its edge.
"""

from __future__ import annotations


class PosDriverError(Exception):
    """Root of the POS driver exceptions."""


class PosConfigError(PosDriverError):
    """The driver's settings are unusable."""


class PosResolveError(PosDriverError):
    """A POS announced over mDNS could not be found."""


class NotificationInvalid(PosDriverError, ValueError):
    """A POS notification (a Lightspeed webhook body, say) is not one the driver understands."""
