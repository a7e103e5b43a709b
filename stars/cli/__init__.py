"""Command-line front ends (the scripts in ``jobs/`` call these). The only layer that parses
arguments and prints errors; everything below it raises :class:`stars.errors.StarsError`."""
