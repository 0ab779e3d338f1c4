"""`python -m scribefleet ...`: the same CLI as the `scribefleet` command (for a venv whose scripts are not on PATH)."""

from scribefleet.cli.main import main

if __name__ == "__main__":
    main()
