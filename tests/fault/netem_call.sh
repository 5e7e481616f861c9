#!/usr/bin/env bash
# Fault run: `streamavatar bench call` inside a fresh network namespace whose
# loopback carries netem packet loss and jitter. Server and client both talk
# over that loopback, so every RTP/RTCP/STUN/DTLS packet of the call crosses
# the impairment (each direction). Reports received fps, decode errors and
# the server's count of PLI/FIR keyframe requests (recovery after loss).
#
#   sudo tests/fault/netem_call.sh                    # 5% loss, 20±10 ms
#   sudo LOSS=10% DELAY=40ms JITTER=20ms tests/fault/netem_call.sh --sessions 2
#
# Needs root (ip netns), iproute2 and the sch_netem kernel module
# (`modprobe sch_netem`); exits 3 when netem is not available. Extra
# arguments go to `bench call`. BIN= picks the binary (default: the dev build).
set -euo pipefail
cd "$(dirname "$0")/../.."
LOSS="${LOSS:-5%}"
DELAY="${DELAY:-20ms}"
JITTER="${JITTER:-10ms}"
WINDOW_S="${WINDOW_S:-20}"
BIN="${BIN:-target/debug/streamavatar}"
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build, or set BIN=)" >&2; exit 2; }
NS="streamavatar-fault-$$"
ip netns add "$NS"
trap 'ip netns del "$NS"' EXIT
ip netns exec "$NS" ip link set lo up
if ! ip netns exec "$NS" tc qdisc add dev lo root netem loss "$LOSS" delay "$DELAY" "$JITTER" distribution normal; then
  echo "netem is not available here (tc: sch_netem missing; try modprobe sch_netem)" >&2
  exit 3
fi
echo "netns $NS: lo with netem loss $LOSS delay $DELAY jitter $JITTER"
ip netns exec "$NS" tc -s qdisc show dev lo | head -3
ip netns exec "$NS" "$BIN" bench call --config tiny --seconds "$WINDOW_S" "$@"
ip netns exec "$NS" tc -s qdisc show dev lo | sed -n 2,3p
