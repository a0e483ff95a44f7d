"""`python3 -m tests.xapisim serve ...` entry point."""
import sys

from tests.xapisim.cli import main

sys.exit(main())
