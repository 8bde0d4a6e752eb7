"""Drivers: POS drivers under ``drivers.pos``, printer transports and tickets under ``drivers.printers``."""
