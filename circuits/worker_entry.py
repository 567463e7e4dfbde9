"""`python -m gaincell.circuits.worker_entry FD`: a simulator worker process (see workers.py)."""
import sys

from gaincell.circuits.workers import main

if __name__ == "__main__":
    main(sys.argv)
