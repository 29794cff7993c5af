"""aiosd."""
