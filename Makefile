# The two set-up commands (see README.md). Each bootstraps .venv itself.
.PHONY: demo test

demo:
	tools/bootstrap demo
	.venv/bin/python -m nodes.demo

test:
	tools/bootstrap test
	tools/test
