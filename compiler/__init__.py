"""fpgaprint compiler."""
