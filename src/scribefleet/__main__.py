"""`python -m scribefleet ...`: the same CLI as the `scribefleet` command (for a tree not installed, or a venv's python)."""

from scribefleet.cli.main import main

if __name__ == "__main__":
    main()
