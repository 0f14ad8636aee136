"""``python -m qclassify`` and the ``qclassify`` console script.

`run` imports the command line itself, so Ctrl-C during the seconds torch takes to import ends
with one line and the shell's status 130 instead of a KeyboardInterrupt traceback.
"""

import sys

# The shell's status of a process ended by SIGINT (128 + 2); qclassify.cli uses these too.
INTERRUPTED_EXIT_CODE = 130
INTERRUPTED_MESSAGE = "Interrupted."


def run() -> None:
    """Start the ``qclassify`` command line."""
    try:
        from qclassify.cli import main
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    main()


if __name__ == "__main__":
    run()
