"""`python -m devstack up|down|status|env [NAME ...]`; the package docstring says what each does."""

from devstack import main

raise SystemExit(main())
