"""Aeraki MetaProtocol messages, written from Aeraki's published field numbers."""
