"""Importers: one module per source format, all writing through :mod:`stars.data.shards`.

Each importer turns its source into *items* (a file, a video, an array row range) and a pure
``parse(item) -> Parsed`` function; :func:`stars.data.formats.convert.run_conversion` runs the
parsing (in parallel where it pays), writes the samples, and accounts for every sample seen:
written + rejected = seen, in ``report.json``.
"""
