#!/bin/sh
# No arguments, or ROS arguments first: run robovlm_node with the installed parameter file, the caller's --ros-args
# overriding it (e.g. `--ros-args -p model_path:=/model -p instruction:="go to the cup"`).
# ROBOVLM_PARAMS names another parameter file. Anything else is run as a command (`robovlm replay ...`,
# `python3 -m robovlm_node.tools.demo`, `bash`).
set -e
PARAMS="${ROBOVLM_PARAMS:-$(python3 -c 'import sys; print(sys.prefix)')/share/robovlm/config/robovlm.yaml}"
if [ "$#" -eq 0 ] || [ "$1" = "--ros-args" ]; then
    [ "$#" -gt 0 ] && shift
    exec robovlm_node --ros-args --params-file "$PARAMS" "$@"
fi
exec "$@"
