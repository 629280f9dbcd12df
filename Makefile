# The README's commands. Each one sets the machine up first (apt + venv).
.PHONY: setup run demo test bench fuzz clean

setup:
	./scripts/setup.sh

run: setup            ## the node demo
	.venv/bin/nodemesh demo

demo: run

test:                 ## every test; kernel tests need root
	./scripts/test.sh

bench: setup          ## every benchmark, peers in the same run
	.venv/bin/python -m bench.run_all

clean:
	rm -rf build dist *.egg-info agent/codec/_native* .pytest_cache
