"""``python -m genkit``: the same as the ``genkit`` command."""

from genkit.cli.app import main

if __name__ == "__main__":
    main()
