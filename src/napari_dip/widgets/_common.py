"""Helpers shared by the widget base and its stack-job runner: what ``device='auto'`` means for
``preset='auto'``, the worker slots that keep a run's outcome, and a run's entry in napari's
activity panel."""

from __future__ import annotations

from qtpy.QtCore import QTimer

from ..core.devices import available_devices


def _device_kind(device: str) -> str:
    """What ``device`` means for ``preset='auto'``: ``'auto'`` is a GPU where there is one."""
    if device == "auto":
        return next((d for d in available_devices() if d not in ("auto", "cpu")), "cpu")
    return device


class _RunSlots:
    """The worker's ``returned`` and ``errored`` slots: they keep the outcome, or the error, in the
    run in progress (``self._run``, a dict; None between runs), for ``finished`` to act on."""

    _run: dict | None

    def _on_returned(self, outcome) -> None:
        if self._run is not None:
            self._run["outcome"] = outcome

    def _on_errored(self, err: BaseException) -> None:
        if self._run is not None:
            self._run["error"] = err


class _ActivityProgress:
    """The run in napari's activity panel (``napari.utils.progress``); its cancel button cancels.

    napari's activity bar calls ``QApplication.processEvents()`` on every change of its value or
    description, so changes made inside a signal handler would re-enter the handler. Changes are
    therefore applied from a zero-delay timer (outside any handler), never re-entrantly, and only
    the latest one counts.
    """

    def __init__(self, desc: str, total: int, on_cancel):
        from napari.utils import cancelable_progress

        widget = self

        class _Progress(cancelable_progress):
            def cancel(self) -> None:  # the activity panel's cancel button
                super().cancel()
                widget.on_cancel()

        self.on_cancel = on_cancel
        self.bar = _Progress(total=max(int(total), 1), desc=desc)
        self._n = 0
        self._pending: tuple[int, int, str] | None = None
        self._scheduled = self._busy = self._closed = False

    def show(self, n: int, total: int, desc: str) -> None:
        """Show ``n`` of ``total`` and ``desc`` soon (the latest call wins)."""
        self._pending = (n, total, desc)
        if not self._scheduled and not self._closed:
            self._scheduled = True
            QTimer.singleShot(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._closed or self._busy or self._pending is None:
            return
        n, total, desc = self._pending
        self._pending = None
        self._busy = True
        try:
            bar = self.bar
            if total != bar.total:
                bar.total = max(int(total), 1)
            n = max(0, min(int(n), bar.total))
            if n != self._n:
                bar.update(n - self._n)
                self._n = n
            if desc != bar.desc:
                bar.set_description(desc)
        finally:
            self._busy = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._busy:  # inside one of the bar's own processEvents calls: close it afterwards
            QTimer.singleShot(0, self.bar.close)
        else:
            self.bar.close()
