"""xDS: the ADS client (SotW and delta), Aeraki's RDS stream, the relay server, xds-serve.

client side:  channel -> stream (grpc.aio, reconnects) -> protocol (sotw/delta, sans-I/O)
              -> applier (ConfigStore, warming, TTL, references) -> sinks (relay, BPF, source)
server side:  served (resources + change journal) -> server (SotW and delta ADS/RDS)
"""
