"""The ``nlwu`` console command: one entry point over the suite's module mains (``nlwu --help``)."""
