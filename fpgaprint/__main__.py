"""`python -m fpgaprint` runs the command line."""

from fpgaprint.cli import main

main()
