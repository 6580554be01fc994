"""``python -m alluxiofs``: the same as the ``alluxiofs`` command."""

from .cli import main

raise SystemExit(main())
