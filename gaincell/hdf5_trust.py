"""The trust policy for HDF5 files gaincell reads: a file must hold its own data.

HDF5 lets a file point into other files: a dataset's raw data may live in another file (external storage), a
name may be a link into another file (external link) or to another name (soft link), and a dataset may be
assembled from datasets of other files (virtual dataset). gaincell never writes any of these, and following one
would read (and show, fit or export) a file the user did not give, so every reader refuses a file holding one
before it reads any data. A dataset may also declare more values than it stores (chunks that are never written
read as fill values): one larger than this machine's memory is refused by name before it is read
(`check_trusted` applies both rules).
"""
from __future__ import annotations

import os

import h5py


def outside_reference(f: h5py.File) -> str | None:
    """What in `f` points elsewhere ("dataset /x/y has external raw storage in 'a.bin'", ...), or None.

    Only link and dataset-creation metadata is read: no link is followed and no data is read."""
    found: list[str] = []

    def visit(name: str, link) -> bool | None:
        where = f"/{name}"
        if isinstance(link, h5py.ExternalLink):
            found.append(f"{where} is an external link (to {link.path!r} in the file {link.filename!r})")
        elif isinstance(link, h5py.SoftLink):
            found.append(f"{where} is a soft link (to {link.path!r})")
        elif not isinstance(link, h5py.HardLink):
            found.append(f"{where} is a user-defined link")
        else:
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    sources = sorted({source.file_name for source in obj.virtual_sources()})
                    found.append(f"dataset {where} is a virtual dataset (assembled from {', '.join(map(repr, sources))})")
                elif obj.external:
                    files = sorted({str(entry[0]) for entry in obj.external})
                    found.append(f"dataset {where} has external raw storage (its data lives in "
                                 f"{', '.join(map(repr, files))})")
        return True if found else None  # stop at the first one

    f.visititems_links(visit)
    return found[0] if found else None


def memory_bytes() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def oversized_dataset(f: h5py.File, limit: int) -> str | None:
    """The first dataset of `f` whose declared size exceeds `limit` bytes, described, or None (no data read)."""
    found: list[str] = []

    def visit(name: str, obj) -> bool | None:
        size = (obj.size or 0) * obj.dtype.itemsize if isinstance(obj, h5py.Dataset) else 0  # None: empty
        if size > limit:
            found.append(f"dataset /{name} declares {obj.shape} values of {obj.dtype} ({size / 2**30:.3g} GiB)")
            return True
        return None

    f.visititems(visit)
    return found[0] if found else None


def check_trusted(f: h5py.File, path, error: type[Exception]) -> None:
    """Raise `error` naming `path` and the offending object when `f` points into other files or names, or
    declares a dataset larger than this machine's memory (which could never be read)."""
    check_self_contained(f, path, error)
    limit = memory_bytes()
    what = oversized_dataset(f, limit)
    if what is not None:
        raise error(f"{path}: refused: {what}, more than this machine's memory ({limit / 2**30:.3g} GiB); a "
                    "gaincell file never holds such a dataset (a damaged or crafted file?)")


def check_self_contained(f: h5py.File, path, error: type[Exception]) -> None:
    """Raise `error` naming `path` and the offending object when `f` points into other files or names."""
    what = outside_reference(f)
    if what is not None:
        raise error(f"{path}: refused: {what}. A gaincell file holds all of its own data; files with external "
                    "links, soft links, external raw storage or virtual datasets are not read (they could make "
                    "gaincell read, show or copy another file)")
