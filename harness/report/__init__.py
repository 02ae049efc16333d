"""Results out: the static report site, its tables and figures, the published numbers,
``ltbench check`` and ``ltbench status``. Nothing here imports torch."""
