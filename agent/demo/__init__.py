"""The node demo: a simulated node from cgroups, real Redis, the real datapath."""
