"""The `m3search` command line: one module per command group, registered in `main`."""
