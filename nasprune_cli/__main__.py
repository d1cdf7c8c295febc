"""`python -m nasprune_cli`: the same CLI as the `nasprune` console script."""

from nasprune_cli.cli.app import main

if __name__ == "__main__":
    main()
