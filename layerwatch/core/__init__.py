"""The ground floor: settings, Kafka wiring and topics, wire contracts, logging, the embedded
servers and the console helpers every command shares.

Every package may import it; it imports none of ingest, scorer, monitor, storage, bench or the
application modules beside it in ``layerwatch/`` (tests/test_layering.py holds it to that).
"""
