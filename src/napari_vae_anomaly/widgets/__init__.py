"""napari dock widgets: thin views over the core functions (no computation here)."""
