"""Stage 3: lmfit models fitted to characterization HDF5 files, written as surrogate HDF5 files."""
