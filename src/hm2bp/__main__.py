"""``python -m hm2bp`` runs the same command line as the ``hm2bp`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
