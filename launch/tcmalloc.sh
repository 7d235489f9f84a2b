#!/usr/bin/env bash
# Runs a command with TCMalloc preloaded when the system has it, as it is
# otherwise (with a note on stderr).
#
#   launch/tcmalloc.sh python -m mixunlearn_jax.main --config=configs/cifar_class.py --workdir=runs/cifar_class
#
# Why (CPU only): XLA:CPU allocates each step's temporary buffer afresh (715 MB
# for ResNet-18's unlearning step at batch 32). glibc's malloc maps an
# allocation that large anew every time and the kernel zero-fills it page by
# page: 184k page faults and 0.31 s of system time per step on 2 cores.
# TCMalloc keeps freed memory for reuse: ResNet-18's step is about 7% faster
# (docs/performance.md, item 12). The CNN's buffers are small; it gains
# nothing. Debian/Ubuntu: apt install libtcmalloc-minimal4.
set -euo pipefail
lib=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | awk '/libtcmalloc(_minimal)?\.so\.4 /{print $NF; exit}' || true)
if [[ -n "$lib" ]]; then
  export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
else
  echo "launch/tcmalloc.sh: no libtcmalloc found; running with the system's malloc" >&2
fi
exec "$@"
