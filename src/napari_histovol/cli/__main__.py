"""``python -m napari_histovol.cli``: the same as the ``histovol`` command."""

import sys

from . import main

sys.exit(main())
