"""``python -m fer_batch`` runs the command-line tool."""

from fer_batch.cli import main

if __name__ == "__main__":
    main()
