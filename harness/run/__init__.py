"""Running a grid: expanding options into runs (:mod:`.grid`), packing them, launching
workers, training and publishing, claiming and resuming runs."""
