"""instances role."""
