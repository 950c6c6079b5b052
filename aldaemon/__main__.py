import sys

from aldaemon.cli import main

sys.exit(main())
