"""fastconv's benchmark suite; see benchmarks/README.md or ``--help``."""
from fastconv.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
