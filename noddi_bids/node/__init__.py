"""The inline clinical mode: a DICOM node returning NODDI maps to PACS (``noddi-bids-node``).

``config`` (settings file), ``headers`` (what is read from each instance), ``spool`` (instances
on disk before they are acknowledged), ``tracker`` (when a series is complete), ``convert``
(dcm2niix), ``process`` (maps of one series), ``send`` (C-STORE with retries and dead letters),
``server`` (the Storage SCP tying them together), ``logs`` (structured logs). The command line
is :mod:`noddi_bids.cli.node`; ``docs/inline.md`` explains deployment.
"""
