"""fpgaprint hw_targets."""
