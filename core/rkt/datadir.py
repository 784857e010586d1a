"""What rkt creates under its data directory is private to root and its group.

rkt 1.x made ``/var/lib/rkt`` and everything below it ``root:rkt`` with no
permission bits for others (``dist/scripts/setup-data-dir.sh``): images may hold
secrets, pod manifests hold environment variables, and lock files must not be
lockable by anyone who could then stall rkt. These helpers give every directory
and file rkt makes there that mode, whatever the process's umask. Image content
(a rendered rootfs, an app's overlay) keeps the modes the image gives it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: directories rkt creates under its data directory (rkt 1.x used 2750 with its group)
DIR_MODE = 0o750
#: files rkt writes there (blobs, manifests, the index, locks, pod files)
FILE_MODE = 0o640


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with :data:`DIR_MODE`.

    Directories that already exist keep their mode: a data directory a user made
    (``--dir``) is theirs to set.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # another rkt made it meanwhile
        os.chmod(directory, DIR_MODE)  # mkdir's mode went through the umask
    return path


def private_file(path: Path | str) -> None:
    """Give a file rkt wrote :data:`FILE_MODE`."""
    os.chmod(path, FILE_MODE)
