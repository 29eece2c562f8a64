"""Opening paths a model, list or database names: regular files only.

A FIFO blocks the reader forever, a device (/dev/zero) never ends and a socket cannot be read:
every path we open, including the files inside database folders and the files HDF5 points to,
is checked to be a regular file first, so such a path fails at once with a CaffeError naming it.
"""
import os
import stat


def check_regular_file(path, error, what=None):
    """Fail with error(...) unless `path` is a regular file (symbolic links are followed)."""
    where = f"{what} '{path}'" if what else f"{path}"
    try:
        mode = os.stat(path).st_mode
    except ValueError:      # a NUL inside the path
        raise error(f"{where!r}: not a valid file name") from None
    except OSError as e:
        raise error(f"{where}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{where}: not a regular file")


def check_folder_files(folder, error, what, names=None):
    """Every entry of `folder` (or the `names` in it that exist) must be a regular file.

    Database libraries open the files of their folder themselves (LMDB's data.mdb, LevelDB's
    CURRENT, MANIFEST-*, *.ldb, LOG, LOCK): a FIFO among them would hang inside the library.
    """
    try:
        entries = os.listdir(folder) if names is None else \
            [n for n in names if os.path.lexists(os.path.join(folder, n))]
    except OSError as e:
        raise error(f"{what} '{folder}' cannot be listed: {e.strerror or e}") from None
    for name in entries:
        check_regular_file(os.path.join(folder, name), error, f"{what} '{folder}': file")
