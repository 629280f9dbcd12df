"""`nodemesh agent`: the node's one xDS client, BPF owner and admin API.

bootstrap -> datapath up -> static resources -> ADS client -> ConfigStore
-> BPF services map (diffed) -> relay to the proxy -> admin API; failover
and enrollment plug in as components.
"""
