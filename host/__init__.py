"""simvault."""

from host import _moved

_moved.install()  # old module paths (before issue 12) stay importable
