"""Background workers (napari thread workers) wrapping the long jobs of the core."""
