"""The fault campaign: the real services on the real embedded broker and database, with
faults injected while a print streams, and a check that nothing was lost or done twice.

``python -m bench.faults`` runs every fault several times and prints the table; the test
suite runs short versions of the same scenarios (tests/faults). Everything listens on
127.0.0.1 and every loop is bounded in time.
"""
