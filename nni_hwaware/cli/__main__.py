"""``python -m nni_hwaware.cli``: the same as the ``nni-hwaware`` console script."""

from nni_hwaware.cli import main

raise SystemExit(main())
