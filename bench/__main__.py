"""``python -m bench``: run the benchmark (``bench/cli.py``)."""

from bench.cli import main

raise SystemExit(main())
