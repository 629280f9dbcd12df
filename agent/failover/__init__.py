"""Failover: the controller that moves a node's traffic between its local
proxy, the remote proxy pool and the original destinations (fail open).

table.py is the state machine, signals.py what it observes, controller.py
the loop that applies it to the BPF `proxy` and `enrolled` maps.
"""
