"""`python -m postwatch.cli`: the full command line, without the quick `check` pass."""
import sys

from postwatch.cli import main

sys.exit(main())
