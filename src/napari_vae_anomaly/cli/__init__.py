"""Command-line interface: ``napari-vae-anomaly <command>`` or ``python -m napari_vae_anomaly``."""
