"""Protobuf modules nodemesh generates itself (scripts/gen_protos.sh); do not edit the *_pb2.py."""
