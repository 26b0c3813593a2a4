import sys

from edgemodels.cli import main

sys.exit(main())
