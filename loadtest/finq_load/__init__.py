"""finq's Locust load model: the mix, the simulated user, its accounts and the run's summary.

loadtest/locustfile.py wires these into Locust; Locust puts that file's folder on sys.path, so
this package is imported as `finq_load` (pytest has loadtest/ on its path too).
"""
