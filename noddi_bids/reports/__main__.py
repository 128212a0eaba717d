"""``python -m noddi_bids.reports``: the command line of :mod:`noddi_bids.cli.reports`."""

import sys

from noddi_bids.cli.reports import main

if __name__ == "__main__":
    sys.exit(main())
