"""Set-up of MultiProc worker processes, imported once by their forkserver.

The forkserver is a fresh interpreter: it does not see the logging levels the command line set
in the main process, so they travel in the environment variable :data:`LEVEL_ENV`.
"""

import os

from nipype import config, logging

#: Environment variable carrying Nipype's workflow/interface log level to the workers.
LEVEL_ENV = "NODDI_BIDS_NIPYPE_LEVEL"

if os.environ.get(LEVEL_ENV):
    config.set("logging", "workflow_level", os.environ[LEVEL_ENV])
    config.set("logging", "interface_level", os.environ[LEVEL_ENV])
    logging.update_logging(config)
