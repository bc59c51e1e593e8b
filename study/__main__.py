"""``python -m study price|compress|save MODEL ...`` (``study.cli``)."""

import sys

from study.cli import main

sys.exit(main())
