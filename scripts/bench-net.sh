#!/usr/bin/env bash
# Network emulation for the benchmarks: an S3 server "far away" from the client.
#
#   scripts/bench-net.sh up   [--name NS] [--rate 1gbit]   create the namespace, print its addresses
#                                                          (--rate none: no tc qdisc, an unshaped link)
#   scripts/bench-net.sh down [--name NS]                  remove it (and its veth pair)
#   scripts/bench-net.sh run  [--rate 1gbit] [--no-netns] -- CMD...
#                                                          up, run CMD with BENCH_NETNS,
#                                                          BENCH_NS_IP and BENCH_HOST_IP set, down
#                                                          (always, through a trap)
#
# Layout: a network namespace holds the S3 server; a veth pair joins it to the
# root namespace, 10.231.B.1 here and 10.231.B.2 inside, a /30 of a block that
# no route uses (picked at run time). Both ends of the pair get a `tc tbf`
# qdisc at --rate (default 1gbit), so traffic to and from the S3 server is
# shaped like a network link. Latency cannot come from `tc netem` (these
# kernels lack it): benches/suite.py puts crates/delay-proxy
# (alluxiofs-delay-proxy, --rtt-ms) in the root namespace in front of the
# server, and every client reaches the S3 server through that proxy.
#
# benches/env.py also uses `up --rate none` for a "remote" cache worker: a
# worker in a namespace of its own (another host to the reader, reached over
# the veth at BENCH_NS_IP), its link left unshaped like a fast cluster network.
#
# --no-netns (or no root / no `ip`): nothing is created, BENCH_NETNS stays
# empty and the benchmark runs on loopback, which its results then say.
# `up` prints shell assignments: eval "$(scripts/bench-net.sh up)".
set -euo pipefail

cmd=${1:-}
[ $# -gt 0 ] && shift
name="afsb$$"
rate="1gbit"
netns=1
while [ $# -gt 0 ]; do
	case "$1" in
	--name) name=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--no-netns) netns=0; shift ;;
	--) shift; break ;;
	*) echo "bench-net.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

host_if="${name}h"
ns_if="${name}p"

can_netns() {
	[ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1
}

down() {
	# Deleting the namespace removes the veth pair and its qdiscs with it.
	ip netns del "$name" 2>/dev/null || true
	ip link del "$host_if" 2>/dev/null || true
}

up() {
	local routes block
	routes=$(ip -4 route)
	block=""
	for b in $(shuf -i 128-255); do
		if ! grep -q "10\.231\.$b\." <<<"$routes"; then block=$b; break; fi
	done
	[ -n "$block" ] || { echo "bench-net.sh: no free 10.231.x.0/30 block" >&2; return 1; }
	local here="10.231.$block.1" there="10.231.$block.2"
	trap 'down; exit 1' ERR
	ip netns add "$name"
	ip link add "$host_if" type veth peer name "$ns_if"
	ip link set "$ns_if" netns "$name"
	ip addr add "$here/30" dev "$host_if"
	ip link set "$host_if" up
	ip netns exec "$name" ip addr add "$there/30" dev "$ns_if"
	ip netns exec "$name" ip link set "$ns_if" up
	ip netns exec "$name" ip link set lo up
	# burst must hold a GSO packet (64 KiB) and a timer tick of traffic.
	if [ "$rate" != none ]; then
		tc qdisc add dev "$host_if" root tbf rate "$rate" burst 1mb latency 50ms
		ip netns exec "$name" tc qdisc add dev "$ns_if" root tbf rate "$rate" burst 1mb latency 50ms
	fi
	trap - ERR
	echo "BENCH_NETNS=$name"
	echo "BENCH_HOST_IP=$here"
	echo "BENCH_NS_IP=$there"
	echo "BENCH_RATE=$rate"
}

case "$cmd" in
up)
	can_netns || { echo "bench-net.sh: needs root, ip and tc" >&2; exit 1; }
	up
	;;
down)
	can_netns && down
	;;
run)
	[ $# -gt 0 ] || { echo "bench-net.sh run: no command after --" >&2; exit 2; }
	if [ "$netns" = 1 ] && can_netns; then
		trap down EXIT
		trap 'down; exit 130' INT TERM
		vars=$(up)
		eval "$vars"
		export BENCH_NETNS BENCH_HOST_IP BENCH_NS_IP BENCH_RATE
	else
		echo "bench-net.sh: no network namespace: the benchmark runs on loopback" >&2
		export BENCH_NETNS="" BENCH_HOST_IP="" BENCH_NS_IP="" BENCH_RATE=""
	fi
	"$@"
	;;
*)
	sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
