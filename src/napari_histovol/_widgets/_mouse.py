"""Drive napari's canvas with real Qt mouse events, as a user's hand does: they travel through
Qt, vispy and napari's mouse callbacks like any click. For the tests, the benchmarks and
``scripts/napari_journey.py``; the plugin itself never calls it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

MODIFIERS = ("Shift", "Control", "Alt")


def drag(
    viewer,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    modifiers: Sequence[str] = (),
    steps: int = 6,
    after_press: Callable[[], None] | None = None,
    after_move: Callable[[], None] | None = None,
) -> None:
    """Press the left button at ``start`` (canvas pixels, x then y), move in ``steps`` even
    steps to ``end`` holding ``modifiers`` (names of :data:`MODIFIERS`), and release there.
    ``after_press`` runs once the button is down, ``after_move`` after every move (process
    events, draw, time a frame...)."""
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    native = viewer.window._qt_viewer.canvas._scene_canvas.native
    held = Qt.KeyboardModifier.NoModifier
    for name in modifiers:
        held |= getattr(Qt.KeyboardModifier, f"{name}Modifier")
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton

    def send(kind, pos, button, buttons) -> None:
        local = QPointF(*pos)
        event = QMouseEvent(kind, local, native.mapToGlobal(local), button, buttons, held)
        QApplication.sendEvent(native, event)

    send(QEvent.Type.MouseButtonPress, start, left, left)
    if after_press is not None:
        after_press()
    for k in range(1, steps + 1):
        pos = tuple(s + (e - s) * k / steps for s, e in zip(start, end, strict=True))
        send(QEvent.Type.MouseMove, pos, none, left)
        if after_move is not None:
            after_move()
    send(QEvent.Type.MouseButtonRelease, end, left, none)


def canvas_centre(viewer) -> tuple[float, float]:
    """The canvas's centre in canvas pixels (x, y)."""
    native = viewer.window._qt_viewer.canvas._scene_canvas.native
    return native.width() / 2, native.height() / 2
