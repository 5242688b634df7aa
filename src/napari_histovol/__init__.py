"""napari-histovol: serial sections to 3D volumes, in napari and on the command line."""

__version__ = "0.1.0"

__all__ = ["__version__"]
