"""User-facing errors.

Every error a user can cause (bad config, missing data, a foreign or corrupt artifact) is raised as a
:class:`ReuseError` whose message names the problem and the fix. Rule scripts print these without a
traceback; anything else is a bug and keeps its traceback.
"""


class ReuseError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(ReuseError):
    """The workflow config does not match the schema or is inconsistent."""


class DataError(ReuseError):
    """A dataset is missing, unreadable or not what the config describes."""


class FingerprintMismatch(ReuseError):
    """An artifact was made for other data than the data it is used with."""


class CorruptArtifact(ReuseError):
    """A checkpoint, cache or table on disk cannot be read."""


class DiskFull(ReuseError, OSError):
    """The disk filled up while an artifact was being written (ENOSPC or a quota): the half-written
    temporary file was removed and the artifact's name was left as it was. Also an :class:`OSError`,
    so code that handles I/O errors still sees it as one."""


class UnsafeArtifact(CorruptArtifact):
    """A file from a results folder, cache or data root holds more than plain data (a pickle that names a
    function or class the safe reader does not allow): it was refused unread, since loading it could run
    code. The message names the file and how to rebuild it. See docs/security.md."""
