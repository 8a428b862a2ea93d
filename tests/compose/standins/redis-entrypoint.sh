#!/bin/sh
# The official image builds Redis with protected mode off (inside a container network it only
# refuses the other containers); Debian's is on. Same effect, as a flag.
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
