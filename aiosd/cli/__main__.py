import sys

from aiosd.cli.main import main

sys.exit(main())
