"""The ``apm`` command: a thin click layer over the ``planner`` library."""
