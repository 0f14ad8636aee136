"""``python -m qclassify`` and the ``qclassify`` console script.

`run` imports the command line itself, so Ctrl-C during the seconds torch takes to import ends
with one line and the shell's status 130 instead of a KeyboardInterrupt traceback.
"""

import sys

from qclassify.options import INTERRUPTED_EXIT_CODE, INTERRUPTED_MESSAGE


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
