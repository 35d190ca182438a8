import sys

from postwatch.cli import main

sys.exit(main())
