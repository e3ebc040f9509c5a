"""The small error hierarchy every stage raises for bad input.

Messages say what is wrong, where (file, line, key) and what to do. The CLI prints the message on
one line and exits non-zero; programming errors are not wrapped and raise normally.
"""

from __future__ import annotations


class VreidError(Exception):
    """Base of every error caused by the user's input, files or configuration."""


class ConfigError(VreidError):
    """A configuration key is unknown, wrongly typed or inconsistent."""


class DatasetError(VreidError):
    """A dataset is missing files, has unparsable label files or inconsistent content."""


class CheckpointError(VreidError):
    """A checkpoint is missing, corrupt, or was made for another model or number of ids."""


class FeatureFileError(VreidError):
    """A feature file or its name index is missing, malformed or does not match its split."""


class SubmissionError(VreidError):
    """A `track2.txt` submission file does not follow the AIC format."""


class WeightsError(VreidError):
    """Pre-trained weights were asked for but cannot be found or do not match."""


class NonFiniteLossError(VreidError):
    """A training loss became NaN or infinite (the message names the epoch, the iteration and
    the setting to change); nothing of that epoch is saved."""
