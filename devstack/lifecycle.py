"""What every local server of the stack shares: ``with`` starts it and stops it, whatever happens inside."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """Mixin for classes with ``start() -> Self`` and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
