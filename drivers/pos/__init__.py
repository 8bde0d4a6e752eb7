"""POS drivers: the interface in ``base``, the registry in ``registry``, one module per POS."""
