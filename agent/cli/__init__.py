"""`nodemesh` command line: node-level control and diagnostics of the datapath."""
