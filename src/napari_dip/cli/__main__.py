"""``python -m napari_dip.cli`` runs the command line (as ``python -m napari_dip`` does)."""

import sys

from . import main

sys.exit(main())
