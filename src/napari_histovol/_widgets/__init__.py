"""napari dock widgets: thin layers over napari_histovol.core, running work on thread workers."""
