"""fastconv's full benchmark suite (``suite.py`` next to this file); see README.md or ``--help``."""
from suite import main

if __name__ == "__main__":
    raise SystemExit(main())
