"""``python -m robovlm.cli`` (torchrun and accelerate launch start the trainer this way)."""

import sys

from . import main

sys.exit(main())
