"""assets role."""
