"""blocks role."""
