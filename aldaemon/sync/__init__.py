"""Pure decisions: nothing in this package imports an I/O library."""
