from normlab.cli import run

run()
