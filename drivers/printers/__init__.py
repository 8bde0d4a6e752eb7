"""Kitchen printers: ticket layout (pure, in ``layout``), transports (``file``, ...) and their errors."""
