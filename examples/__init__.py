"""Examples a user can copy; not part of the installed package."""
