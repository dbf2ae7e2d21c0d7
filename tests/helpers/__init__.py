"""Test helpers (a package, imported as ``helpers`` by the tests and ``tests.helpers`` by scripts).

* :mod:`.mediagen`: media written at test time with PyAV / libsndfile (tones, bars, containers);
* :mod:`.synthdata`: a small dataset in the official DCASE 2017 layout from generated media;
* :mod:`.faults`: real decoder faults (a native crash, a hang) installed in decode workers.
"""
