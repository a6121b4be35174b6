"""`python -m fpgaprint` runs the command line."""

from fpgaprint.cli import main

if __name__ == "__main__":  # not again in worker processes started by spawn
    main()
