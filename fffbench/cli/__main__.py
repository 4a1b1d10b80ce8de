"""``python -m fffbench.cli``: the ``fffbench`` command."""
from fffbench.cli import main

main()
