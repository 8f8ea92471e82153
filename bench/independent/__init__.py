"""Peers written independently of the bench's own (bench/floor_server.py, bench/naive_server.py),
from the plain description only, as a user measuring the service would write them. They share no
code with the bench's peers; `python -m bench --peers independent` runs them next to those, so the
table shows whether the bench's floor and naive server are as fast as a user's."""
