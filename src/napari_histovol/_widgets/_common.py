"""Pieces the dock widgets share: a progress row with cancel, and layer <-> volume helpers."""

from __future__ import annotations

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from ..core.progress import Progress


class ProgressRow(Container):
    """A progress bar, a status line and a Cancel button."""

    def __init__(self) -> None:
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = Label(value="")
        self.cancel = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.bar, self.status, self.cancel], labels=False)
        self.worker = None
        self.cancel.changed.connect(self._cancel)

    def start(self, worker) -> None:
        self.worker = worker
        self.bar.visible = True
        self.bar.value = 0
        self.cancel.enabled = True
        self.status.value = "starting..."

    def update(self, p: Progress) -> None:
        self.bar.max = max(1, p.total)
        self.bar.value = min(p.done, self.bar.max)
        self.status.value = f"{p.stage}: {p.message}" if p.stage else p.message

    def finish(self) -> None:
        self.cancel.enabled = False
        self.bar.visible = False
        self.worker = None

    def _cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelled"
