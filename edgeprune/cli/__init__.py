"""The ``edgeprune`` command line: thin commands over the library API.

Each command lives in its own module with two functions and no heavy imports at module level:

* ``add_parser(subparsers) -> argparse.ArgumentParser`` declares its flags;
* ``run(args, out) -> int`` imports the library lazily, calls it, and prints through ``out``.
"""
