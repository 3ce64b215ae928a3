"""``python -m raytasks.cli``: the ``raytasks`` command."""

from . import main

if __name__ == "__main__":
    main()
