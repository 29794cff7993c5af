"""aiosd: the daemon — assembly, config, local API, CLI and the roles a node plays."""

__version__ = "0.1.0"

__all__ = ["__version__"]
