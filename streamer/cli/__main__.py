"""``python -m streamer.cli``: the ``hpmf`` command."""

from streamer.cli import main

raise SystemExit(main())
