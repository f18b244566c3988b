"""The I/O edges: synthetic sources, extract (landing -> lake), validate (GX), publish."""
