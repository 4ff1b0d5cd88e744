"""What a migration prints, kept for the caller instead of written to stdout.

APM's migrations report progress with ``print()`` (emoji included). Written
straight to stdout, that text would land in the middle of ``--json`` output,
and the library never prints. So the executor runs migration code (and the
loader runs a module's top level) with ``sys.stdout`` redirected to a buffer;
the text travels on the step's event (``StepFinished.output``,
``StepFailed.output``) and the CLI decides where a person sees it
(docs/coming-from-apm.md). Only Python-level writes to ``sys.stdout`` are
caught; a subprocess writing to file descriptor 1 is not.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator


class StepOutput:
    """The text printed by the migration code run so far, until someone ``take``s it."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Redirect ``sys.stdout`` for the block; what was printed is kept even when the block raises."""
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                yield
        finally:
            self._parts.append(buffer.getvalue())

    def take(self) -> str:
        """Everything captured since the last ``take``, then forget it."""
        text, self._parts = "".join(self._parts), []
        return text


@contextlib.contextmanager
def quietly() -> Iterator[io.StringIO]:
    """Capture ``sys.stdout`` into a buffer the caller may read (or drop)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer
