"""``python -m abathur.cli``: the same as the ``abathur`` command."""

from abathur.cli import main

main()
