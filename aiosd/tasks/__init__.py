"""tasks role."""
