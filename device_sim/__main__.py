"""``python -m device_sim`` is the ``device-sim`` command."""

import sys

from device_sim.cli import main

sys.exit(main())
