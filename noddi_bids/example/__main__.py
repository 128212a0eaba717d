"""``python -m noddi_bids.example``: the command line of :mod:`noddi_bids.cli.example`."""

import sys

from noddi_bids.cli.example import main

if __name__ == "__main__":
    sys.exit(main())
