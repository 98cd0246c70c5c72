"""``python -m nodulejax.data.phantom --out DIR --num-scans 20 --seed 0``."""

import sys

from nodulejax.data.phantom.generate import main

if __name__ == "__main__":
    sys.exit(main())
