"""napari-free core of napari-histovol.

Nothing under this package imports napari, Qt or magicgui: every capability is a plain
function over numpy / dask arrays so that the CLI, the napari widgets and scripts share it.
"""
