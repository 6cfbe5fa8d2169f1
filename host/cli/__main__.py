"""`python -m host.cli ...` runs the `simvault` command."""
import sys

from host.cli import main

sys.exit(main())
