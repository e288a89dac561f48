"""Production implementations of the Engine seam."""
