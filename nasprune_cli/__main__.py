"""`python -m nasprune_cli`: the same CLI as the `nasprune` console script."""

import os
import sys

# `python -m` puts the working directory first on sys.path: move it last before anything else is imported, so that a
# file there named like a dependency (yaml.py, fvcore.py) cannot shadow it; the user's modules stay importable
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from nasprune_cli.cli.app import main  # noqa: E402

if __name__ == "__main__":
    main()
