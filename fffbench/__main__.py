"""``python -m fffbench``: the ``fffbench`` command without its console script (e.g. from PYTHONPATH)."""
from fffbench.cli import main

if __name__ == "__main__":
    main()
