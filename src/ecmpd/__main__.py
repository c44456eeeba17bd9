"""`python -m ecmpd`."""

import sys

from ecmpd.cli.main import main

sys.exit(main())
