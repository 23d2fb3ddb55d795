"""The job handlers; each module registers one handler (see ``app.framework``)."""
