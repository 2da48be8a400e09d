import sys

from stepcrawl.cli import main

sys.exit(main())
