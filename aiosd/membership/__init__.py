"""membership role."""
