"""fpgaprint fingerprint."""
