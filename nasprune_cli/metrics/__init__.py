"""Cost and score metrics."""
