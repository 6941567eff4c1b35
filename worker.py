"""Run a Parley Temporal worker (same as `parley worker`)."""

from src.cli import main

if __name__ == "__main__":
    main(["worker"])
