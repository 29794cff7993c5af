"""metrics role."""
