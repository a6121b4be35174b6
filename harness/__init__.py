"""fpgaprint harness."""
