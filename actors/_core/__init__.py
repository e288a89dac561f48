"""Private implementation of the actor runtime; the public names are
re-exported on purpose from :mod:`actors`."""
