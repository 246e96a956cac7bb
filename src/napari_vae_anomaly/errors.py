"""User-facing errors. Their message is one readable line, shown as-is by the CLI and the GUI."""


class AnomalyError(Exception):
    """Base class for errors caused by input the user can fix (files, options, models)."""


class VolumeReadError(AnomalyError, ValueError):
    """A file or folder could not be read as a volume."""


class VolumeWriteError(AnomalyError, ValueError):
    """A volume could not be written (bad path, refusing to overwrite, bad data)."""


class CheckpointError(AnomalyError, ValueError):
    """A model file is not a valid, compatible checkpoint of this package."""


class DeviceError(AnomalyError, RuntimeError):
    """The requested compute device is not available."""
