"""The 'HistoVol' panel: every napari-histovol tool in one dock, one tab each, each tab
scrollable, so that the whole plugin fits a 1000 px high window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._common import plain_viewer

if TYPE_CHECKING:
    import napari

#: Tab title and the widget class (module, name) in the order a user meets them.
TABS = (
    ("Stitch", "stitch_widget", "StitchWidget"),
    ("Sections", "sections_widget", "SectionsWidget"),
    ("Align", "align_widget", "AlignWidget"),
    ("QC", "qc_widget", "QCWidget"),
    ("Interpolate", "interpolate_widget", "InterpolateWidget"),
    ("Isotropic", "isotropic_widget", "IsotropicWidget"),
    ("Build", "build_widget", "BuildWidget"),
    ("3D", "view3d_widget", "View3DWidget"),
    ("Segment", "segment_widget", "SegmentWidget"),
    ("Focus", "focus_widget", "FocusWidget"),
    ("Gaussians", "gaussian_widget", "GaussianWidget"),
)
#: The panel asks for no more height than this (napari's docks otherwise stack to 2300 px).
MAX_HEIGHT = 900


#: labels longer than this many characters wrap instead of widening their tab
WRAP_AT = 40


class HistoVolPanel(QWidget):
    """All of napari-histovol's tools as tabs of one dock widget."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        import importlib

        from .._dask_cache import guard_napari_dask_cache

        super().__init__()
        guard_napari_dask_cache()  # every tab computes sections on threads while napari slices
        self.viewer = viewer = plain_viewer(viewer)
        self.tabs = QTabWidget()
        self.tools: dict[str, object] = {}
        for title, module, name in TABS:
            cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
            tool = cls(viewer)
            self.tools[title] = tool
            page = QWidget()
            column = QVBoxLayout(page)
            column.addWidget(tool.native if hasattr(tool, "native") else tool)
            column.addStretch(1)  # controls packed at the top, not spread over the height
            for label in page.findChildren(QLabel):
                # a long line of text (the Align tab's landmark hint) set the page's width,
                # wider than the dock: the flags column and the controls' right ends were cut
                if len(label.text()) > WRAP_AT:
                    label.setWordWrap(True)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(page)
            self.tabs.addTab(scroll, title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumHeight(16777215)
        self.setMinimumHeight(0)

    def sizeHint(self):  # noqa: D102 - Qt's
        hint = super().sizeHint()
        hint.setHeight(min(hint.height(), MAX_HEIGHT))
        return hint

    def show_tab(self, title: str):
        """Bring a tab forward and return its tool."""
        titles = [t for t, _, _ in TABS]
        self.tabs.setCurrentIndex(titles.index(title))
        return self.tools[title]
